# Session 10, third call (one GPU): s10_b's seektune runs all timed out (105 s on 7B, 72 s on 1.5B). The 1.5B shape
# again, seektune with a longer limit, thread stacks every 30 s and its step lines on a timeout, then Unsloth.
source bench/calls/prelude.sh
mkdir -p $OUT/qwen $OUT/qwen_u
SEEKTUNE_BENCH_STACKS=30 SEEKTUNE_BENCH_TAIL=70 TORCH_LOGS=recompiles timeout 150 python3 bench/train_speed.py run \
  --models qwen1.5b --data synthetic --tools seektune --ckpt on --steps 15 --warmup 3 --timeout 110 \
  --weights-root /tmp/w0 --out $OUT/qwen 2>&1 | grep -v "^|" | cut -c1-200 | tail -75
timeout 90 python3 bench/train_speed.py run --models qwen1.5b --data synthetic --tools unsloth --ckpt on \
  --steps 15 --warmup 3 --timeout 75 --weights-root /tmp/w0 --out $OUT/qwen_u 2>&1 | grep "tok/s\|timed out"
