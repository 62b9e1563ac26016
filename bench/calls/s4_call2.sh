# Session 4, second call (one H200): attention kernels side by side; QLoRA 4-bit (plain PEFT, seektune with the
# fused 4-bit LoRA and offloaded checkpoints, Unsloth 4-bit); DeepSeek-V2-Lite shape on real conversations.
source bench/calls/prelude.sh
python3 bench/attention_kernels.py > $OUT/attention.log 2>&1
python3 bench/train_speed.py run --models llm7b --data synthetic --tools hf-4bit,seektune-4bit,unsloth-4bit \
  --ckpt on --timeout 140 --weights-root /tmp/w --out $OUT/q4 > $OUT/q4.log 2>&1
python3 bench/train_speed.py run --models v2lite --tools hf,seektune --ckpt on --timeout 170 \
  --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|RESULT" $OUT/*.log | cut -c1-400
