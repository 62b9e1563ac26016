# Prepared in session 9 for the next GPU session (one GPU, ~8 min); not run yet. Carry bench/.data and .whl.
#  1. The 7B shape on real conversations in the steady state (--cycle 20 --warmup 20): seektune vs seektune-cudnn,
#     to decide whether cuDNN attention should be the default where its frontend is installed (s8_c timed only a
#     run's first 20 steps, where cuDNN builds a graph per new bucket).
#  2. MFU on the 7B shape with checkpointing off, synthetic full rows, after the in-place LoRA products (session 9):
#     seektune vs Unsloth (the target: 70%; session 5 measured 60.7%).
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/cudnn/*.whl 2>/dev/null
mkdir -p $OUT/cudnn $OUT/mfu
timeout 330 python3 bench/train_speed.py run --models llm7b --data real --tools seektune,seektune-cudnn --ckpt on \
  --cycle 20 --warmup 20 --steps 20 --timeout 150 --weights-root /tmp/w0 --out $OUT/cudnn > $OUT/cudnn.log 2>&1
timeout 240 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,unsloth --ckpt off \
  --timeout 110 --weights-root /tmp/w0 --out $OUT/mfu > $OUT/mfu.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/cudnn.log $OUT/mfu.log | cut -c1-300
