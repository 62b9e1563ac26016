# Session 10, third call (one GPU): s10_b's seektune runs all timed out (105 s on 7B). The 7B pair again, seektune
# with a longer limit, thread stacks every 50 s and its step lines on a timeout, then Unsloth.
source bench/calls/prelude.sh
mkdir -p $OUT/dense
SEEKTUNE_BENCH_STACKS=50 SEEKTUNE_BENCH_TAIL=80 TORCH_LOGS=recompiles timeout 330 python3 bench/train_speed.py run \
  --models llm7b --data synthetic --tools seektune --ckpt on --timeout 170 --weights-root /tmp/w0 --out $OUT/dense \
  2>&1 | grep -v "^|" | cut -c1-240 | tail -90
mkdir -p $OUT/dense_u
timeout 120 python3 bench/train_speed.py run --models llm7b --data synthetic --tools unsloth --ckpt on --timeout 100 \
  --weights-root /tmp/w0 --out $OUT/dense_u 2>&1 | grep "tok/s\|timed out"
