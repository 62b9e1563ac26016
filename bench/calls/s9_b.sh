# Session 9, second call (one GPU), after the in-place LoRA products (lora_fused._add_product_): s9_a's profile found
# 18 ms per 7B step of device-to-device copies that Unsloth does not make (a compiled addmm_ copied each LoRA
# linear's output into a new buffer first). One stream, ratios within it. Carry bench/.data and .whl.
#  1. 7B shape, synthetic full 2 048-token rows, batch 2, checkpointing on: seektune vs Unsloth.
#  2. QLoRA 4-bit, same shape and rows: seektune-4bit vs Unsloth 4-bit.
#  3. 1.5B shape, synthetic full rows, batch 4, checkpointing on: seektune vs Unsloth.
source bench/calls/prelude.sh
mkdir -p $OUT/dense $OUT/qlora $OUT/qwen
timeout 230 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,unsloth --ckpt on \
  --timeout 110 --weights-root /tmp/w0 --out $OUT/dense > $OUT/dense.log 2>&1
timeout 215 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit,unsloth-4bit \
  --ckpt on --timeout 105 --weights-root /tmp/w0 --out $OUT/qlora > $OUT/qlora.log 2>&1
timeout 150 python3 bench/train_speed.py run --models qwen1.5b --data synthetic --tools seektune,unsloth --ckpt on \
  --steps 12 --warmup 3 --timeout 70 --weights-root /tmp/w0 --out $OUT/qwen > $OUT/qwen.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out\|^|" $OUT/dense.log $OUT/qlora.log $OUT/qwen.log | cut -c1-300
