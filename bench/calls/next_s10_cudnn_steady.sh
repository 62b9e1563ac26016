# Prepared in session 8 for the next GPU session (two H200s, ~8 min); not run yet (the session's device time ran out).
# Session 8 found (s8_e, s8_f) that compiled 4-bit layers kept every dequantized bf16 weight of a layer from its
# forward to its backward (AOTAutograd's joint CSE merged the backward's second dequantization with the forward's):
# 0.3 GiB of seektune-4bit's 6.28 GiB peak, against Unsloth 4-bit's 6.03. The fix (speed.compiled, joint_cse=False
# for 4-bit models) is tested on the CPU only.
#   GPU 0: QLoRA 4-bit, 7B shape, synthetic rows, checkpointing on: seektune-4bit vs Unsloth 4-bit (the target:
#          tokens/s >= Unsloth's at <= its peak memory).
#   GPU 1: seektune-4bit again with SEEKTUNE_BENCH_MEMORY: what is alive at the peak now; then the 7B shape on real
#          conversations in the steady state (--cycle 20 --warmup 20): seektune vs seektune-cudnn, to decide whether
#          cuDNN attention should be the default where its frontend is installed (s8_c timed only a run's first steps).
# Ratios within GPU 0's stream. Carry bench/.data and .whl.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/cudnn/*.whl 2>/dev/null
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 420 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit,unsloth-4bit \
    --ckpt on --timeout 200 --weights-root /tmp/w0 --out $OUT/g0 ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1 SEEKTUNE_BENCH_MEMORY=1
  timeout 200 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-4bit --ckpt on \
    --steps 2 --warmup 1 --timeout 190 --weights-root /tmp/w1 --out $OUT/g1
  unset SEEKTUNE_BENCH_MEMORY
  timeout 300 python3 bench/train_speed.py run --models llm7b --data real --tools seektune,seektune-cudnn --ckpt on \
    --cycle 20 --warmup 20 --steps 20 --timeout 140 --weights-root /tmp/w1 --out $OUT/g1/cudnn ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|timed out" $OUT/g0.log $OUT/g1.log | cut -c1-500
python3 -c "
import json
for r in json.load(open('$OUT/g1/speed.json'))['results']:
    m = r.get('memory', {}); print({k: v for k, v in m.items() if k != 'alive_at_peak'})
    for row in m.get('alive_at_peak', [])[:8]: print(row[1], row[2], row[0][:200])
"
