# Session 10, second call (one GPU): the recomputation of a checkpointed layer leaves out the MLP's down projection
# (lora_fused.recomputing_for_backward: its output is never read there). One stream, ratios within it.
# Carry bench/.data and .whl.
#  1. 7B shape, synthetic full 2 048-token rows, batch 2, checkpointing on: seektune vs Unsloth.
#  2. 1.5B shape, synthetic full rows, batch 4, checkpointing on: seektune vs Unsloth.
#  3. QLoRA 4-bit, 7B shape, synthetic rows: seektune-4bit vs Unsloth 4-bit.
source bench/calls/prelude.sh
mkdir -p $OUT/dense $OUT/qlora $OUT/qwen
timeout 220 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,unsloth --ckpt on \
  --timeout 105 --weights-root /tmp/w0 --out $OUT/dense > $OUT/dense.log 2>&1
timeout 150 python3 bench/train_speed.py run --models qwen1.5b --data synthetic --tools seektune,unsloth --ckpt on \
  --steps 15 --warmup 3 --timeout 72 --weights-root /tmp/w0 --out $OUT/qwen > $OUT/qwen.log 2>&1
timeout 200 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit,unsloth-4bit \
  --ckpt on --timeout 98 --weights-root /tmp/w0 --out $OUT/qlora > $OUT/qlora.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/dense.log $OUT/qwen.log $OUT/qlora.log | cut -c1-300
