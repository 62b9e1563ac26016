# Prepared in session 6 for the next GPU session (one H200, ~6 min): V2-Lite on real conversations, plain PEFT vs
# seektune's default (graphed eager layers) vs graphed compiled layers (train.compile=true with the graphs), going
# round the 20 batches of earlier sessions so the timed steps are the steady state.
source bench/calls/prelude.sh
timeout 560 python3 bench/train_speed.py run --models v2lite --tools hf,seektune,seektune-graphs-compiled --ckpt on \
  --cycle 20 --warmup 20 --steps 20 --timeout 300 --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed decoder" $OUT/*.log | cut -c1-600
