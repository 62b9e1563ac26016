# Prepared in session 4 for the next GPU session (one H200, < 10 min): the 7B shape on synthetic rows with today's
# defaults (one-node LoRA + SwiGLU node + offload) next to the per-linear nodes alone and Unsloth, checkpointing on;
# then checkpointing off (memory prediction ~27 GiB, MFU target 70%).
source bench/calls/prelude.sh
python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,seektune-nomlp,unsloth --ckpt on \
  --timeout 130 --weights-root /tmp/w --out $OUT/on > $OUT/on.log 2>&1
python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune,unsloth --ckpt off \
  --timeout 130 --weights-root /tmp/w --out $OUT/off > $OUT/off.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/*.log | cut -c1-300
