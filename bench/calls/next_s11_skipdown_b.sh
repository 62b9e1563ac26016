# Prepared in session 10 for the next GPU session, after next_s11_skipdown.sh and only if seektune-skipdown ran there
# (one GPU, ~8 min). Carry bench/.data and .whl.
#  1. 1.5B shape, synthetic full rows, batch 4, checkpointing on: seektune, seektune-skipdown, Unsloth.
#  2. QLoRA 4-bit, 7B shape: seektune-skipdown-4bit, Unsloth 4-bit (seektune-4bit: session 9's s9_c).
source bench/calls/prelude.sh
mkdir -p $OUT/qwen $OUT/qlora
timeout 260 python3 bench/train_speed.py run --models qwen1.5b --data synthetic \
  --tools seektune,seektune-skipdown,unsloth --ckpt on --steps 15 --warmup 3 --timeout 85 --weights-root /tmp/w0 \
  --out $OUT/qwen 2>&1 | grep "tok/s\|timed out\|    "
timeout 260 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-skipdown-4bit,unsloth-4bit \
  --ckpt on --timeout 115 --weights-root /tmp/w0 --out $OUT/qlora 2>&1 | grep "tok/s\|timed out\|    "
find $OUT -name speed.md -delete
