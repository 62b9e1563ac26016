# Checkpoint offload (train.offload_checkpoints): GPU 0 speed/memory next to the default and Unsloth (7B shape,
# synthetic rows, checkpointing on); GPU 1 the longest sequence it trains in 80 GB.
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( CUDA_VISIBLE_DEVICES=0 python3 bench/train_speed.py run --models llm7b --data synthetic \
    --tools seektune,seektune-offload,unsloth --ckpt on --timeout 150 --weights-root /tmp/w0 --out $OUT/g0 \
    > $OUT/g0.log 2>&1 ) &
( CUDA_VISIBLE_DEVICES=1 python3 bench/train_speed.py maxlen --models llm7b --tools seektune-offload --cap-gib 80 \
    --lengths 16384,32768,65536,98304,131072 --step-limit 40 --timeout 300 --weights-root /tmp/w1 --out $OUT/g1 \
    > $OUT/g1.log 2>&1 ) &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|maxlen\|Error" $OUT/g0.log $OUT/g1.log
