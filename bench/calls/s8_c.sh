# Session 8, third call (two H200s): cuDNN attention on the 7B shape with real conversations, whose packed rows
# hold samples of unequal length (the synthetic rows of s8_a were single samples, which go through sdpa either way).
#   GPU 0: checkpointing on: seektune (varlen FlashAttention for unequal rows) vs seektune-cudnn vs Unsloth.
#   GPU 1: checkpointing off (the MFU target): seektune vs seektune-cudnn.
# Ratios within each GPU's stream. Carry bench/.data and .whl.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/cudnn/*.whl 2>/dev/null
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 540 python3 bench/train_speed.py run --models llm7b --data real --tools seektune,seektune-cudnn,unsloth \
    --ckpt on --timeout 170 --weights-root /tmp/w0 --out $OUT/g0/dense ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 540 python3 bench/train_speed.py run --models llm7b --data real --tools seektune,seektune-cudnn \
    --ckpt off --timeout 200 --weights-root /tmp/w1 --out $OUT/g1/dense ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/g0.log $OUT/g1.log | cut -c1-500
