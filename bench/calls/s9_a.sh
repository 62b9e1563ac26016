# Session 9, first call (one GPU; this session lends no two-GPU kind). Sequential, one stream, ratios within it.
#  1. QLoRA 4-bit, 7B shape, synthetic rows, checkpointing on: seektune-4bit vs Unsloth 4-bit, after session 8's fix
#     (compiled 4-bit layers dequantize again in backward instead of keeping forward's bf16 weights). Target:
#     tokens/s >= Unsloth's at <= its peak memory.
#  2. Kernel profile (--profile) of seektune vs Unsloth, 7B shape, synthetic full rows, checkpointing on: where the
#     last 2% goes (session 8: 0.98x).
# Carry bench/.data and .whl.
source bench/calls/prelude.sh
mkdir -p $OUT/qlora $OUT/profile
timeout 330 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit,unsloth-4bit \
  --ckpt on --timeout 160 --weights-root /tmp/w0 --out $OUT/qlora > $OUT/qlora.log 2>&1
timeout 240 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,unsloth --ckpt on \
  --steps 8 --warmup 3 --profile --timeout 115 --weights-root /tmp/w0 --out $OUT/profile > $OUT/profile.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/qlora.log $OUT/profile.log | cut -c1-500
python3 -c "
import json
for r in json.load(open('$OUT/profile/speed.json'))['results']:
    p = r.get('profile', {}); print(r['model'], r['tool'], p.get('families_ms'), p.get('wall_ms_profiled'))
    for k, ms in p.get('top_ms', [])[:15]: print('   ', ms, k)
"
