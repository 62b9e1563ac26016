# Session 11, first GPU call (one H100, 507 s). Carry bench/.data and .whl. Run as `CALL_SECONDS=560 bash bench/calls/s11_a.sh`.
# Session 10 made the recomputation of a checkpointed layer leave out the MLP's down projection, whose output nothing
# reads (offload_layer_inputs(skip_unused_mlp_output=True); same gradients on the CPU, eager and compiled, and the same
# two compiled graphs as without it). Its one GPU run (s10_b) timed out for every seektune row, so it is off by
# default. s10_b's machine was slow (Unsloth loaded in 33 s, not 17) and cold, and its timeouts were tight, so they may
# not mean a hang: this call allows 150 s a 7B row, runs the skip first, and prints the step lines and thread stacks
# (every 60 s) of any row that times out.
#  1. 7B shape, synthetic full rows, batch 2, checkpointing on: seektune-skipdown, Unsloth, seektune.
#  2. 1.5B shape, synthetic full rows, batch 4, checkpointing on: the same three, in what time the call has left
#     (CALL_SECONDS, default 580).
source bench/calls/prelude.sh
mkdir -p $OUT/dense $OUT/qwen
export SEEKTUNE_BENCH_STACKS=60 SEEKTUNE_BENCH_TAIL=40
timeout 320 python3 bench/train_speed.py run --models llm7b --data synthetic \
  --tools seektune-skipdown,unsloth,seektune --ckpt on --timeout 150 --weights-root /tmp/w0 \
  --out $OUT/dense 2>&1 | grep -v "^|" | cut -c1-200 | tail -70
LEFT=$(( ${CALL_SECONDS:-580} - SECONDS ))  # the 1.5B rows get what the call has left
[ $LEFT -gt 120 ] && timeout $LEFT python3 bench/train_speed.py run --models qwen1.5b --data synthetic \
  --tools seektune-skipdown,unsloth,seektune --ckpt on --steps 15 --warmup 3 --timeout 90 --weights-root /tmp/w0 \
  --out $OUT/qwen 2>&1 | grep -v "^|" | cut -c1-200 | tail -50
find $OUT -name speed.md -delete
