# Session 4, first call (one H200): what one-node LoRA linears and the offloaded checkpointing are worth on the
# deepseek-llm-7b shape (synthetic 2048-token rows, checkpointing on, next to Unsloth), then where the GPU time goes:
# kernel profiles of a shallow 7B-wide model and a shallow V2-Lite-wide model on real conversations.
source bench/calls/prelude.sh
python3 bench/train_speed.py run --models llm7b --data synthetic \
  --tools seektune-nofused,seektune,seektune-offload,unsloth --ckpt on --timeout 130 --weights-root /tmp/w \
  --out $OUT/on > $OUT/on.log 2>&1
python3 bench/train_speed.py run --models llm7b --layers 8 --data synthetic --tools seektune --ckpt on --profile \
  --timeout 120 --weights-root /tmp/w --out $OUT/prof7b > $OUT/prof7b.log 2>&1
python3 bench/train_speed.py run --models v2lite --layers 6 --tools seektune --ckpt on --profile --timeout 120 \
  --weights-root /tmp/w --out $OUT/profv2 > $OUT/profv2.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/*.log
