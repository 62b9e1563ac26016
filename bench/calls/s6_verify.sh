# Session 6, fourth call: the graphed layers' tests on the GPU after the fix for captures after the first bucket
# (gradients taken for stand-ins of the LoRA weights, not for weights whose autograd nodes live on the default stream).
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/test/*.whl 2>/dev/null
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/train/test_layer_graphs.py > $OUT/pytest.log 2>&1
grep -v "Warning\|warn" $OUT/pytest.log | grep -E "Error|assert|passed|failed|captures" | cut -c1-1500 | head -20
timeout 60 python3 bench/graphed_layers_check.py 0,3,4 2>&1 | grep -v Warn | tail -3
