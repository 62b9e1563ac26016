# Session 6, last call: V2-Lite on real conversations with the final code: plain PEFT vs seektune's default (graphed
# checkpointed layers are auto-on for MoE with lora dropout 0), going round the same 20 batches (--cycle 20).
source bench/calls/prelude.sh
timeout 400 python3 bench/train_speed.py run --models v2lite --tools hf,seektune --ckpt on \
  --cycle 20 --warmup 20 --steps 20 --timeout 300 --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed decoder\|fast path" $OUT/*.log | cut -c1-600
