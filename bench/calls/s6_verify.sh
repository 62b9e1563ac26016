# Session 6, fourth call: the graphed layers' tests on the GPU after the fix for captures after the first bucket
# (gradients taken for stand-ins of the LoRA weights, not for weights whose autograd nodes live on the default stream).
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/test/*.whl 2>/dev/null
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/train/test_layer_graphs.py > $OUT/pytest.log 2>&1
grep -v "Warning\|warn" $OUT/pytest.log | grep -E "Error|assert|passed|failed|captures" | cut -c1-1500 | head -20
cat > /tmp/dbg.py <<'PY'
import sys, warnings, torch
sys.path.insert(0, ".")
from tests.train import test_layer_graphs as t
from seektune.training.layer_graphs import graph_layers, graph_stats
order = [int(a) for a in sys.argv[1].split(",")]
model = t._tiny_moe("cuda", torch.bfloat16)
graph_layers(model)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    t._train(model, [t.STEPS[i] for i in order], device="cuda")
print(order, graph_stats(model)["captures"], "\n".join(sorted(set(str(x.message)[:1500] for x in w if "graphed" in str(x.message))))[:3000])
PY
timeout 60 python3 /tmp/dbg.py 0,3,4 2>&1 | grep -v Warn | tail -3
