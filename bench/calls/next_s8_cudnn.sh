# Prepared in session 7 for the next GPU session (two H200s, ~8 min): cuDNN attention on packed rows as seektune's
# attention (train.attention=seektune_cudnn, src/seektune/training/cudnn_attention.py), never run on a GPU yet.
#   GPU 0: its tests (right against per-sample fp32 attention, one graph pair per bucket, compiled and
#          CUDA-graph-captured calls, a model's loss against varlen FlashAttention); then the V2-Lite shape with
#          seektune's default (graphs of compiled layers) against the same with cuDNN attention.
#   GPU 1: deepseek-llm-7b shape, synthetic rows, checkpointing on: seektune vs seektune-cudnn vs Unsloth.
# If the tests fail, the benchmark rows say nothing: fix first. Carry bench/.data and .whl.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/cudnn/*.whl .whl/test/*.whl 2>/dev/null
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/train/test_cudnn_attention.py > $OUT/g0/pytest.log 2>&1
  timeout 400 python3 bench/train_speed.py run --models v2lite --tools seektune,seektune-cudnn --ckpt on \
    --cycle 20 --warmup 20 --steps 20 --timeout 200 --weights-root /tmp/w0 --out $OUT/g0/moe ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,seektune-cudnn,unsloth \
    --ckpt on --timeout 180 --weights-root /tmp/w1 --out $OUT/g1/dense ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -v "Warning\|warn" $OUT/g0/pytest.log | grep -E "Error|assert|passed|failed" | cut -c1-800 | head -12
grep -h "tok/s\|Error\|failed\|graphed decoder" $OUT/g0.log $OUT/g1.log | cut -c1-500
