# Session 4, first call: what one-node LoRA linears and the offloaded checkpointing are worth, and where the GPU
# time goes (kernel profiles of shallow 7B-wide and V2-Lite-wide models).
#   GPU 0: deepseek-llm-7b shape, synthetic 2048-token rows: before/after fused LoRA, offload, Unsloth; ckpt off.
#   GPU 1: profiles (8-layer 7B, 6-layer V2-Lite on real data), then QLoRA 4-bit with offload vs Unsloth 4-bit.
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  python3 bench/train_speed.py run --models llm7b --data synthetic \
    --tools seektune-nofused,seektune,seektune-offload,unsloth --ckpt on --timeout 150 --weights-root /tmp/w0 \
    --out $OUT/g0/on
  python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune --ckpt off --timeout 150 \
    --weights-root /tmp/w0 --out $OUT/g0/off ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  python3 bench/train_speed.py run --models llm7b --layers 8 --data synthetic --tools seektune,unsloth --ckpt on \
    --profile --timeout 150 --weights-root /tmp/w1 --out $OUT/g1/prof7b
  python3 bench/train_speed.py run --models v2lite --layers 6 --tools seektune --ckpt on --profile --timeout 150 \
    --weights-root /tmp/w1 --out $OUT/g1/profv2
  python3 bench/train_speed.py run --models llm7b --data synthetic --tools seektune-offload-4bit,unsloth-4bit \
    --ckpt on --timeout 150 --weights-root /tmp/w1 --out $OUT/g1/q4 ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed" $OUT/g0.log $OUT/g1.log
