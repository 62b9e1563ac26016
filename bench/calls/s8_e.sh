# Session 8, fifth call (two H200s): where QLoRA's extra peak memory comes from (s8_d: seektune-4bit 6.28 GiB vs
# Unsloth 4-bit 6.03). One tool per GPU, 7B shape, synthetic rows, checkpointing on, a few steps, then one recorded
# step (SEEKTUNE_BENCH_MEMORY): resident memory, phase peaks, allocations alive at the peak by the code that made them.
# Carry bench/.data and .whl.
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
export SEEKTUNE_BENCH_MEMORY=1
( export CUDA_VISIBLE_DEVICES=0
  timeout 330 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit --ckpt on \
    --steps 3 --warmup 2 --timeout 250 --weights-root /tmp/w0 --out $OUT/g0 ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 330 python3 bench/train_speed.py run --models llm7b --data synthetic --tools unsloth-4bit --ckpt on \
    --steps 3 --warmup 2 --timeout 250 --weights-root /tmp/w1 --out $OUT/g1 ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/g0.log $OUT/g1.log | cut -c1-500
python3 -c "
import json
for f in ('$OUT/g0/speed.json', '$OUT/g1/speed.json'):
    for r in json.load(open(f))['results']: print(r['tool'], json.dumps(r.get('memory'), indent=0)[:3000])
"
