# Session 6, second call: the graphed layers' GPU test (the first call's failed on a 5-sample row; this one names the
# operation that broke the capture), then V2-Lite on real conversations going round the same 20 batches as the
# sessions before (--cycle 20, 20 warm-up steps): plain PEFT vs seektune without and with the graphs.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/test/*.whl 2>/dev/null
timeout 200 python3 -m pytest -x -q -p no:cacheprovider tests/train/test_layer_graphs.py -k cuda > $OUT/pytest.log 2>&1
grep -v "Warning\|warn" $OUT/pytest.log | grep -E "Error|assert|passed|failed|captures" | cut -c1-1500 | head -20
timeout 400 python3 bench/train_speed.py run --models v2lite --tools hf,seektune-nographs,seektune-graphs --ckpt on \
  --cycle 20 --warmup 20 --steps 20 --timeout 300 --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed decoder" $OUT/*.log | cut -c1-600
