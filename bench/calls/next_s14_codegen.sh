# Prepared in session 14 for the next GPU session, not run yet (one GPU, timeout_s 600, ~6 min). Carry bench/.data and .whl.
# s14_a.sh (this session's first call) found the skip's first step as slow with no compile pool
# (TORCHINDUCTOR_COMPILE_THREADS=1: 70.1 s, Scheduler.codegen 48.3 s) as with it, against 19.1 s for seektune's default:
# the time is Inductor's own code generation on the GPU, which the CPU's fake H100 does in 0.2-0.5 s a graph. Here
# every Scheduler.codegen call runs under cProfile, in whatever thread it runs (SEEKTUNE_BENCH_PROFILE_CODEGEN).
# Two decoder layers of the 7B shape, synthetic full rows, checkpointing on, no compile pool, each row with its own
# empty Inductor cache.
source bench/calls/prelude.sh
export SEEKTUNE_BENCH_COMPILE=1 SEEKTUNE_BENCH_TAIL=20 TORCHINDUCTOR_COMPILE_THREADS=1 SEEKTUNE_BENCH_PROFILE_CODEGEN=$OUT/codegen
row() {  # name tool limit
  TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-$1 timeout $(($3 + 40)) python3 bench/train_speed.py run --models llm7b \
    --layers 2 --data synthetic --tools $2 --ckpt on --steps 2 --warmup 1 --timeout $3 --weights-root /tmp/w0 \
    --out $OUT/$1 2>&1 | grep "tok/s\|timed out\|exit" | cut -c1-300
  python3 -c "import json,sys; [print(r['tool'], r.get('step_seconds'), json.dumps(r.get('compile_first_step',{}).get('seconds'))[:700]) for r in json.load(open(sys.argv[1]))['results']]" $OUT/$1/speed.json
}
row skip seektune-skipdown 240
row plain seektune 120
for f in $OUT/codegen/*/codegen-*.txt; do
  echo "#### $f: $(head -1 $f)"
  # the 28 heaviest functions by inclusive time, then 14 by own time; paths shortened
  python3 - "$f" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
parts = text.split("Ordered by: ")
for part, n in zip(parts[1:], (28, 14)):
    lines = [l for l in part.splitlines() if re.match(r"\s+[\d/]+\s+\d", l)]
    print("--", part.splitlines()[0])
    for l in lines[:n]:
        print(re.sub(r"/\S*site-packages/", "", l)[:170])
PY
done
find $OUT -name speed.md -delete
