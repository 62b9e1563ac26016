# Session 9, fourth call (the same warm H100 as s9_c): s9_b's 1.5B row, where Unsloth ran past its 70 s limit.
# 1.5B shape (R1-Distill-Qwen-1.5B), synthetic full rows, batch 4, checkpointing on: seektune vs Unsloth.
# Carry bench/.data and .whl.
source bench/calls/prelude.sh
mkdir -p $OUT/qwen
timeout 220 python3 bench/train_speed.py run --models qwen1.5b --data synthetic --tools seektune,unsloth --ckpt on \
  --steps 12 --warmup 3 --timeout 110 --weights-root /tmp/w0 --out $OUT/qwen > $OUT/qwen.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/qwen.log | cut -c1-300
