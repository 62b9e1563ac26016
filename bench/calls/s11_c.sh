# Session 11, third GPU call (the same warm H100, 152 s; the session's device time ran out with it). Carry bench/.data
# and .whl. The 1.5B shape again (s11_a's steps slowed halfway through its skip row): skip, seektune, Unsloth.
source bench/calls/prelude.sh
mkdir -p $OUT/qwen2
timeout 150 python3 bench/train_speed.py run --models qwen1.5b --data synthetic --tools seektune-skipdown,seektune,unsloth \
  --ckpt on --steps 15 --warmup 3 --timeout 70 --weights-root /tmp/w0 --out $OUT/qwen2 2>&1 \
  | grep "tok/s\|exit\|timed" | cut -c1-300 | tail -30
