# Session 9, third call (one GPU): s9_b's QLoRA row again. In s9_b seektune-4bit's first steps took 0.35-0.38 s
# (Unsloth 4-bit: 0.36-0.38) and then slowed to 0.5-0.6 s for the rest of its run, while Unsloth 4-bit also had a
# slow stretch (0.47-0.52 s): the card was not steady. Same command, with the card's clocks and throttle reasons
# before and after. Carry bench/.data and .whl.
source bench/calls/prelude.sh
q="--query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader"
nvidia-smi $q
mkdir -p $OUT/qlora
timeout 250 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit,unsloth-4bit \
  --ckpt on --timeout 110 --weights-root /tmp/w0 --out $OUT/qlora > $OUT/qlora.log 2>&1
nvidia-smi $q
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/qlora.log | cut -c1-300
python3 -c "
import json
for r in json.load(open('$OUT/qlora/speed.json'))['results']: print(r['tool'], [round(x, 3) for x in r.get('step_seconds', [])])
"
