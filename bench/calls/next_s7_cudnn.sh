# Prepared in session 6 for session 7's GPU call (one H200, ~4-6 min, carry .whl): cuDNN's fused attention on packed
# rows through NVIDIA's cudnn frontend (nvidia-cudnn-frontend 1.32.0 in .whl/cudnn, on torch's libcudnn 9.19), forward
# and backward right? faster than varlen FlashAttention? one graph for many length patterns? (bench/cudnn_frontend_probe.py)
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/cudnn/*.whl 2>/dev/null || { echo "cudnn frontend wheel install failed"; exit 1; }
# The frontend dlopens the first libcudnn.so.9 on LD_LIBRARY_PATH: make that the one torch loads (nvidia-cudnn-cu13).
# The probe also finds it in /proc/self/maps after importing torch and sets the same path (and libcudart) itself.
CUDNN_LIB=$(python3 -c "import os, nvidia.cudnn as m; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null)
export LD_LIBRARY_PATH=${CUDNN_LIB:+$CUDNN_LIB:}${LD_LIBRARY_PATH:-}
echo "libcudnn dir: ${CUDNN_LIB:-not found}"
timeout 560 python3 bench/cudnn_frontend_probe.py > $OUT/cudnn_frontend.json 2> $OUT/cudnn_frontend.log
echo "probe rc=$?"
python3 bench/cudnn_frontend_probe.py --summary $OUT/cudnn_frontend.json 2>&1 | cut -c1-400 | head -c 1800
# then the whole report compact (the file keeps it indented), cut at ~3.6 KB; the log's tail
python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(',', ':')))" \
  $OUT/cudnn_frontend.json > /tmp/cudnn_frontend_compact.json 2>/dev/null \
  || cp $OUT/cudnn_frontend.json /tmp/cudnn_frontend_compact.json
head -c 3600 /tmp/cudnn_frontend_compact.json; echo
grep -v -i warn $OUT/cudnn_frontend.log | tail -c 500
