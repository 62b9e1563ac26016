# Prepared in session 6 for the next GPU session (one H200, ~6 min): deepseek-llm-7b shape, synthetic 2048-token
# rows, checkpointing on: seektune's default vs its checkpointed layers as CUDA graphs of compiled code (forced on;
# auto keeps graphs to MoE) vs Unsloth, to see whether the graphs' lost host time shows on a GPU-bound dense step.
source bench/calls/prelude.sh
timeout 560 python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,seektune-graphs-compiled,unsloth \
  --ckpt on --timeout 240 --weights-root /tmp/w --out $OUT/dense > $OUT/dense.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed decoder" $OUT/*.log | cut -c1-600
