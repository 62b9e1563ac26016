# Session 7, call 3 (one H200): `seektune train` itself on the GPU with a MoE model, default settings (checkpointing
# auto-on, layers as CUDA graphs of compiled code) against checkpointing off; a 4-layer V2-Lite-wide model (random
# weights, 1 dense + 3 MoE layers) on the EmoLLM conversations (bench/.data/emollm.json, copied unchanged from
# ../shared/data/emollm_data/data.json). Then the graphed layers' tests on the GPU.
# Before the call, here: cp ../shared/data/emollm_data/data.json bench/.data/emollm.json;
# pip download --no-deps -d .whl/e2e gguf nltk (seektune's imports that the GPU image lacks; both folders are ignored).
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/e2e/*.whl .whl/test/*.whl 2>/dev/null
W=$(python3 -c "import sys; sys.path.insert(0, 'bench'); import train_speed; from pathlib import Path; print(train_speed.make_weights('v2lite', Path('/tmp/w'), 4))" 2>/dev/null | tail -1)
for v in default nockpt; do
  extra=""; [ $v = nockpt ] && extra="--set train.gradient_checkpointing=false"
  timeout 210 python3 -c "from seektune.cli import main; main()" train --model $W --data bench/.data/emollm.json \
    --format conversation --output /tmp/run-$v --set train.max_steps=80 --set train.per_device_batch_size=2 \
    --set data.max_length=2048 --set data.holdout_prompts=0 --set train.save_steps=1000 $extra > $OUT/train-$v.log 2>&1
  echo "== $v rc=$?"
  grep -v -i "warn" $OUT/train-$v.log | grep -i "fast path\|graph\|checkpoint\|compil\|error\|run folder\|peak" | cut -c1-300 | head -12
  python3 - /tmp/run-$v <<'P'
import json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
tps = [r["tokens_per_second"] for r in rows if "tokens_per_second" in r]
info = json.loads((run / "run.json").read_text())
print("steps", len(tps), "median tok/s of the last 40:", statistics.median(tps[-40:]), "first 10:", tps[:10])
print({k: info.get(k) for k in ("train_loss", "seconds", "layer_graphs", "peak_memory_gib", "status")})
print("loss 1..5, last:", [r.get("loss") for r in rows[:5]], rows[-2].get("loss"))
P
  cp /tmp/run-$v/run.json $OUT/run-$v.json 2>/dev/null; cp /tmp/run-$v/metrics.jsonl $OUT/metrics-$v.jsonl 2>/dev/null
done
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/train/test_layer_graphs.py tests/train/test_fast_path.py > $OUT/pytest.log 2>&1
grep -v "Warning\|warn" $OUT/pytest.log | grep -E "Error|assert|passed|failed" | cut -c1-800 | head -12
