# GPU 1: the longest sequence seektune trains in 80 GB (7B shape, batch 1), with an untimed warm-up step;
# both GPUs at the same time: the 2x2 sweep, two runs at a time (bench/calls/sweep_2gpu.sh).
source bench/calls/prelude.sh
mkdir -p $OUT/len
( CUDA_VISIBLE_DEVICES=1 python3 bench/train_speed.py maxlen --models llm7b --tools seektune --cap-gib 80 \
    --lengths 16384,32768,65536,98304,131072 --step-limit 40 --timeout 300 --weights-root /tmp/w1 \
    --out $OUT/len > $OUT/len.log 2>&1 ) &
bash bench/calls/sweep_2gpu.sh
wait
tail -n 5 $OUT/len.log
