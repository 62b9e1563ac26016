# Session 7, call 2 (two H200s of one host, one stream per GPU):
#   GPU 0: V2-Lite on real conversations, 20 batches round: plain PEFT and seektune with checkpointing off, and
#          seektune's new default with checkpointing on (graphs of compiled layers), to decide whether MoE runs
#          should turn checkpointing on by themselves.
#   GPU 1: the longest single sequence that trains in 80 GiB, deepseek-llm-7b shape, batch 1, seektune's default
#          (offloaded checkpoints) vs Unsloth, in one call.
# Run from the repo root with bench/.data and .whl carried:  bash bench/calls/s7_b.sh
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 330 python3 bench/train_speed.py run --models v2lite --tools hf,seektune --ckpt off \
    --cycle 20 --warmup 20 --steps 20 --timeout 200 --weights-root /tmp/w0 --out $OUT/g0/off
  timeout 230 python3 bench/train_speed.py run --models v2lite --tools seektune --ckpt on \
    --cycle 20 --warmup 20 --steps 20 --timeout 220 --weights-root /tmp/w0 --out $OUT/g0/on ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 bench/train_speed.py maxlen --models llm7b --tools seektune,unsloth --cap-gib 80 \
    --lengths 65536,98304,131072 --step-limit 100 --timeout 270 --weights-root /tmp/w1 --out $OUT/g1 ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed decoder\|fit (\|maxlen\|timed out" $OUT/g0.log $OUT/g1.log | cut -c1-500
