# Session 8, first call (two H200s, 218 s): ran as prepared in session 7.
#   GPU 0: the tests of cuDNN attention on packed rows (train.attention=seektune_cudnn,
#          src/seektune/training/cudnn_attention.py): right against per-sample fp32 attention, one graph pair per
#          bucket, compiled and CUDA-graph-captured calls, a model's loss against varlen FlashAttention; then the
#          deepseek-llm-7b shape (synthetic rows, checkpointing on) with it, against Unsloth.
#   GPU 1: the same shape: seektune (rows of equal samples batched through sdpa, new in session 7) vs
#          seektune-varlenonly (session 6's path, every row through varlen FlashAttention) vs Unsloth.
# Ratios within each GPU's stream. If the tests fail, GPU 0's benchmark row says nothing: fix first.
# Carry bench/.data and .whl.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/cudnn/*.whl .whl/test/*.whl 2>/dev/null
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/train/test_cudnn_attention.py > $OUT/g0/pytest.log 2>&1
  timeout 400 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-cudnn,unsloth \
    --ckpt on --timeout 190 --weights-root /tmp/w0 --out $OUT/g0/dense ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 bench/train_speed.py run --models llm7b --data synthetic \
    --tools seektune,seektune-varlenonly,unsloth --ckpt on --timeout 180 --weights-root /tmp/w1 \
    --out $OUT/g1/dense ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -v "Warning\|warn" $OUT/g0/pytest.log | grep -E "Error|assert|passed|failed" | cut -c1-800 | head -12
grep -h "tok/s\|Error\|failed" $OUT/g0.log $OUT/g1.log | cut -c1-500
