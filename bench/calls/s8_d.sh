# Session 8, fourth call (two H200s): the rows not re-measured since session 4, with today's defaults.
#   GPU 0: QLoRA 4-bit, 7B shape, synthetic rows, checkpointing on: seektune-4bit vs Unsloth 4-bit
#          (session 4: 6.20 vs 6.03 GiB peak allocated; the target is <= Unsloth's).
#   GPU 1: the 1.5B shape (DeepSeek-R1-Distill-Qwen-1.5B), checkpointing on: synthetic rows, then real conversations,
#          seektune vs Unsloth.
# Ratios within each GPU's stream. Carry bench/.data and .whl.
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 420 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit,unsloth-4bit \
    --ckpt on --timeout 200 --weights-root /tmp/w0 --out $OUT/g0/qlora ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 200 python3 bench/train_speed.py run --models qwen1.5b --data synthetic --tools seektune,unsloth \
    --ckpt on --timeout 95 --weights-root /tmp/w1 --out $OUT/g1/synthetic
  timeout 200 python3 bench/train_speed.py run --models qwen1.5b --data real --tools seektune,unsloth \
    --ckpt on --timeout 95 --weights-root /tmp/w1 --out $OUT/g1/real ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/g0.log $OUT/g1.log | cut -c1-500
