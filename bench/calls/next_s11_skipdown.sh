# Prepared in session 10 for the next GPU session (one GPU, ~8 min); not run yet. Carry bench/.data and .whl.
# Session 10 made the recomputation of a checkpointed layer leave out the MLP's down projection, whose output nothing
# reads (offload_layer_inputs(skip_unused_mlp_output=True); same gradients on the CPU, eager and compiled). Its one GPU
# run (s10_b) timed out for every seektune row, and no machine could be started again to find out why, so it is off
# by default. s10_b's machine was slow (Unsloth loaded in 33 s, not 17) and cold, so its timeouts may only have been
# too tight: this call allows 170 s a row and runs the skip first. It finds out:
#  1. The tiny probe with the skip on, with thread stacks every 25 s (bench/calls/skipdown_probe.py).
#  2. 7B shape, synthetic full rows, checkpointing on: seektune, seektune-skipdown (stacks every 60 s and its step
#     lines if it times out), Unsloth.
source bench/calls/prelude.sh
TORCH_LOGS=recompiles timeout 80 python3 bench/calls/skipdown_probe.py on 2>&1 | grep -v "^\s*$" | cut -c1-200 | tail -40
mkdir -p $OUT/dense
SEEKTUNE_BENCH_STACKS=60 SEEKTUNE_BENCH_TAIL=60 timeout 480 python3 bench/train_speed.py run --models llm7b \
  --data synthetic --tools seektune-skipdown,unsloth,seektune --ckpt on --timeout 170 --weights-root /tmp/w0 \
  --out $OUT/dense 2>&1 | grep -v "^|" | cut -c1-200 | tail -80
find $OUT -name speed.md -delete
