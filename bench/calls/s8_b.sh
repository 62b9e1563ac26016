# Session 8, second call (two H200s, 469 s): ran as prepared in session 7,
# after s8_a had shown the cuDNN attention right:
#   GPU 0: V2-Lite on real conversations, 20 batches round: seektune's default vs the same with cuDNN attention.
#   GPU 1: the longest-sequence ladder again (7B shape, batch 1, 80 GiB cap): single-sample rows now go through
#          sdpa's batched kernel instead of varlen FlashAttention; session 7 had seektune's 98k/128k steps at
#          1.4-1.5x Unsloth's time.
# Carry bench/.data and .whl.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/cudnn/*.whl 2>/dev/null
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 560 python3 bench/train_speed.py run --models v2lite --tools seektune,seektune-cudnn --ckpt on \
    --cycle 20 --warmup 20 --steps 20 --timeout 270 --weights-root /tmp/w0 --out $OUT/g0/moe ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 bench/train_speed.py maxlen --models llm7b --tools seektune,unsloth --cap-gib 80 \
    --lengths 65536,98304,131072 --step-limit 100 --timeout 270 --weights-root /tmp/w1 --out $OUT/g1 ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|fit (\|maxlen\|timed out" $OUT/g0.log $OUT/g1.log | cut -c1-500
