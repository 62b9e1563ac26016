# Session 8, sixth call (one H200): s8_e again for seektune-4bit alone, with 10 frames per allocation, to see which
# code keeps six dequantized 4-bit weights (300 MiB) alive at the step's peak. Carry bench/.data and .whl.
source bench/calls/prelude.sh
export SEEKTUNE_BENCH_MEMORY=1 SEEKTUNE_BENCH_MEMORY_DEPTH=10
timeout 200 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit --ckpt on \
  --steps 2 --warmup 1 --timeout 170 --weights-root /tmp/w0 --out $OUT > $OUT/run.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/run.log | cut -c1-500
python3 -c "
import json
for r in json.load(open('$OUT/speed.json'))['results']:
    for row in r.get('memory', {}).get('alive_at_peak', [])[:4]: print(row)
    print(r.get('memory', {}).get('error'))
"
