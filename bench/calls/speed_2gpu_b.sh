# Two GPUs, two streams at once:
#   GPU 0: QLoRA 4-bit on the deepseek-llm-7b shape (anchors' synthetic rows), then bf16/8-bit/4-bit inference;
#   GPU 1: the longest sequence that trains in 80 GB (7B shape, batch 1), then the MoE expert kernels (V2-Lite shape).
# Run from the repo root with bench/.data and .whl carried:  bash bench/calls/speed_2gpu_b.sh
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  python3 bench/train_speed.py run --models llm7b --data synthetic --tools hf-4bit,seektune-4bit,unsloth-4bit \
    --ckpt on --timeout 170 --weights-root /tmp/w0 --out $OUT/g0/q
  OUT=$OUT/g0/qi timeout 200 python3 bench/quantized_inference.py --workdir /tmp/qi ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  python3 bench/train_speed.py maxlen --models llm7b --tools hf,seektune,unsloth --cap-gib 80 \
    --lengths 16384,32768,65536,98304 --step-limit 25 --timeout 150 --weights-root /tmp/w1 --out $OUT/g1/len
  OUT=$OUT/g1/moe timeout 210 python3 bench/moe_experts.py --impls eager,grouped_mm --steps 5 --warmup 2 ) \
    > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
tail -n 40 $OUT/g0.log $OUT/g1.log
