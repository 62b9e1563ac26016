# Prepared in session 4 for the next GPU session (one H200, < 10 min): DeepSeek-V2-Lite shape on real conversations,
# plain PEFT vs seektune's default (offload off for MoE) vs seektune with the offload forced on, to settle whether
# the offload or something else slowed the session-4 MoE row (2.01x vs 2.53x the session before).
source bench/calls/prelude.sh
python3 bench/train_speed.py run --models v2lite --tools hf,seektune,seektune-offload --ckpt on --timeout 200 \
  --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/*.log | cut -c1-300
