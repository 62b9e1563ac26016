# Session 11, second GPU call (the same warm H100 as s11_a, 154 s). Carry bench/.data and .whl.
# s11_a's Unsloth 7B row crashed (exit -11, a segfault inside Unsloth's worker): Unsloth again, beside the skip, in one
# call. The 7B shape, synthetic full rows, batch 2, checkpointing on.
source bench/calls/prelude.sh
mkdir -p $OUT/dense2
timeout 300 python3 bench/train_speed.py run --models llm7b --data synthetic --tools unsloth,seektune-skipdown \
  --ckpt on --timeout 140 --weights-root /tmp/w0 --out $OUT/dense2 2>&1 | grep -v "^|" | grep "tok/s\|exit\|timed\|    " \
  | cut -c1-300 | tail -30
