# Session 7, call 1 (two H200s of one host, one stream per GPU; each stream's ratios come from its own GPU):
#   GPU 0: V2-Lite on real conversations, plain PEFT vs seektune's default (graphed eager layers) vs graphed
#          compiled layers, going round 20 batches; then where one MoE layer's GPU time goes (eager vs compiled).
#   GPU 1: deepseek-llm-7b shape, synthetic rows, checkpointing on: seektune vs graphed compiled layers vs Unsloth;
#          then the cuDNN-frontend probe (cuDNN attention on packed rows).
# Run from the repo root with bench/.data and .whl carried:  bash bench/calls/s7_a.sh
source bench/calls/prelude.sh
mkdir -p $OUT/g0 $OUT/g1
( export CUDA_VISIBLE_DEVICES=0
  timeout 400 python3 bench/train_speed.py run --models v2lite --tools hf,seektune,seektune-graphs-compiled --ckpt on \
    --cycle 20 --warmup 20 --steps 20 --timeout 200 --weights-root /tmp/w0 --out $OUT/g0/moe
  timeout 140 python3 bench/moe_layer_graphs.py --kernels > $OUT/g0/kernels.json ) > $OUT/g0.log 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 380 python3 bench/train_speed.py run --models llm7b --data synthetic \
    --tools seektune,seektune-graphs-compiled,unsloth --ckpt on --timeout 180 --weights-root /tmp/w1 --out $OUT/g1/dense
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/cudnn/*.whl
  CUDNN_LIB=$(python3 -c "import os, nvidia.cudnn as m; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null)
  export LD_LIBRARY_PATH=${CUDNN_LIB:+$CUDNN_LIB:}${LD_LIBRARY_PATH:-}
  timeout 150 python3 bench/cudnn_frontend_probe.py > $OUT/g1/cudnn_frontend.json 2> $OUT/g1/cudnn_frontend.log
  echo "cudnn probe rc=$?" ) > $OUT/g1.log 2>&1 &
wait
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed decoder\|rc=" $OUT/g0.log $OUT/g1.log | cut -c1-500
python3 -c "
import json,sys
d=json.load(open('$OUT/g0/kernels.json'))
for k,v in d['ms'].items(): print(k, json.dumps(v)[:1500])
" 2>&1 | head -c 3200
python3 bench/cudnn_frontend_probe.py --summary $OUT/g1/cudnn_frontend.json 2>&1 | cut -c1-300 | head -c 1500
grep -v -i warn $OUT/g1/cudnn_frontend.log | tail -c 400
