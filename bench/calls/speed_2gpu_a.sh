# Two GPUs, two streams at once (each benchmark's ratios come from its own GPU):
#   GPU 0: deepseek-llm-7b shape, the anchors' synthetic 2048-token rows, checkpointing on and off;
#   GPU 1: R1-Distill-Qwen-1.5B and DeepSeek-V2-Lite shapes on real conversations, checkpointing on.
# Run from the repo root with bench/.data and .whl carried:  bash bench/calls/speed_2gpu_a.sh
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  python3 bench/train_speed.py run --models llm7b --data synthetic --tools hf,seektune,seektune-nofl,unsloth \
    --ckpt on --timeout 170 --weights-root /tmp/w0 --out $OUT/g0/on
  python3 bench/train_speed.py run --models llm7b --data synthetic --tools hf,seektune,unsloth \
    --ckpt off --timeout 170 --weights-root /tmp/w0 --out $OUT/g0/off ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  python3 bench/train_speed.py run --models qwen1.5b --tools hf,seektune,unsloth --ckpt on --timeout 170 \
    --weights-root /tmp/w1 --out $OUT/g1/dense
  python3 bench/train_speed.py run --models v2lite --tools hf,seektune --ckpt on --timeout 200 \
    --weights-root /tmp/w1 --out $OUT/g1/moe ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
tail -n 30 $OUT/g0.log $OUT/g1.log
