# Ran at commit dbdda7a (the in-graph checkpoint was reverted after this measurement; seektune-outckpt is gone).
# Session 5, fifth call (one H200): gradient checkpointing traced inside each compiled layer (the new default).
# DeepSeek-V2-Lite shape on real conversations, plain PEFT vs seektune; then an 8-layer deepseek-llm-7b-wide model on
# synthetic rows, seektune vs seektune-outckpt (transformers' checkpoint around each compiled layer, as before).
source bench/calls/prelude.sh
python3 bench/train_speed.py run --models v2lite --tools hf,seektune --ckpt on --timeout 200 \
  --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
grep -h "tok/s\|Error\|failed" $OUT/moe.log | cut -c1-300
python3 bench/train_speed.py run --models llm7b --layers 8 --data synthetic --tools seektune,seektune-outckpt \
  --ckpt on --timeout 120 --weights-root /tmp/w --out $OUT/dense8 > $OUT/dense8.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/dense8.log | cut -c1-300
