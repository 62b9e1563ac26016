# Session 4, third call (one H200): DeepSeek-V2-Lite shape on real conversations (plain PEFT vs seektune), then
# R1-Distill-Qwen-1.5B on real conversations (seektune vs Unsloth), checkpointing on.
source bench/calls/prelude.sh
python3 bench/train_speed.py run --models v2lite --tools hf,seektune --ckpt on --timeout 220 \
  --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
python3 bench/train_speed.py run --models qwen1.5b --tools seektune,unsloth --ckpt on --timeout 120 \
  --weights-root /tmp/w --out $OUT/dense > $OUT/dense.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/*.log | cut -c1-300
