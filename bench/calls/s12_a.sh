# Prepared in session 11, run in session 12 (one H100, 551 s; bench/RESULTS.md, Session 12). Carry bench/.data and .whl.
# The skip (train.lean_recompute, bench tool seektune-skipdown) took 6% off the 7B shape's checkpointed steps in
# session 11 (1.10x Unsloth in one call), but its first step compiled 30-70 s longer than seektune's default, on the
# GPU only. This call:
#  1. 1.5B shape, synthetic full rows, batch 4, checkpointing on: seektune-skipdown, Unsloth, seektune, each worker
#     recording torch.compile's counters and seconds per phase after its first step (SEEKTUNE_BENCH_COMPILE=1;
#     printed at the end): which phase the skip's extra time is in, and whether it recompiles.
#  2. QLoRA 4-bit, 7B shape: seektune-skipdown-4bit, Unsloth 4-bit (seektune-4bit: session 9's s9_c).
source bench/calls/prelude.sh
mkdir -p $OUT/qwen $OUT/qlora
export SEEKTUNE_BENCH_COMPILE=1 SEEKTUNE_BENCH_TAIL=30
timeout 290 python3 bench/train_speed.py run --models qwen1.5b --data synthetic \
  --tools seektune-skipdown,unsloth,seektune --ckpt on --steps 15 --warmup 3 --timeout 120 --weights-root /tmp/w0 \
  --out $OUT/qwen 2>&1 | grep "tok/s\|timed out\|exit\|    " | cut -c1-400
timeout 270 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-skipdown-4bit,unsloth-4bit \
  --ckpt on --timeout 165 --weights-root /tmp/w0 --out $OUT/qlora 2>&1 | grep "tok/s\|timed out\|exit\|    " | cut -c1-400
python3 - <<'PY'
import json, os
for f in ("qwen", "qlora"):
    path = os.path.join(os.environ["OUT"], f, "speed.json")
    for r in json.load(open(path))["results"] if os.path.exists(path) else []:
        print(r["tool"], json.dumps(r.get("compile_first_step"))[:1500])
PY
find $OUT -name speed.md -delete
