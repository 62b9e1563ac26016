# Session 5, fourth call (one H200): Python hot spots (cProfile) and a host+GPU Chrome trace of one step, for the
# V2-Lite-wide MoE at 6 and 2 layers (seektune) and 6 layers (plain PEFT): what sets the MoE step's host time.
source bench/calls/prelude.sh
for layers in 6 2; do
  SEEKTUNE_BENCH_TRACE=$OUT/trace$layers python3 bench/train_speed.py run --models v2lite --layers $layers \
    --tools seektune --ckpt on --timeout 150 --weights-root /tmp/w --out $OUT/l$layers > $OUT/l$layers.log 2>&1
done
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/*.log | cut -c1-300
ls -la $OUT/trace*/*
