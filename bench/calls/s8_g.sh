# Session 8, seventh call (one H200, the session's last device seconds): s8_f after the fix (4-bit layers compiled
# with AOTAutograd's joint CSE off, speed.compiled): seektune-4bit's peak and what is alive at it.
# Carry bench/.data and .whl.
source bench/calls/prelude.sh
export SEEKTUNE_BENCH_MEMORY=1
timeout 95 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit --ckpt on \
  --steps 2 --warmup 1 --timeout 90 --weights-root /tmp/w0 --out $OUT > $OUT/run.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/run.log | cut -c1-500
python3 -c "
import json
for r in json.load(open('$OUT/speed.json'))['results']:
    m = r.get('memory', {}); print({k: v for k, v in m.items() if k != 'alive_at_peak'})
    for row in m.get('alive_at_peak', [])[:8]: print(row[1], row[2], row[0][:200])
"
