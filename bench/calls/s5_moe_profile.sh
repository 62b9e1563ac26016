# Session 5, third call (one H200): where the host time of a MoE step goes. A 6-layer V2-Lite-wide model on real
# conversations, seektune with and without compiled layers and plain PEFT, each profiled with host and GPU activity
# (top host ops by self time, synchronisations, GPU kernel time, profiled wall time); dynamo's recompiles and graph
# breaks are logged.
source bench/calls/prelude.sh
export TORCH_LOGS=recompiles,graph_breaks
for tool in seektune seektune-nocompile hf; do
  python3 bench/train_speed.py run --models v2lite --layers 6 --tools $tool --ckpt on --profile --timeout 150 \
    --weights-root /tmp/w --out $OUT/prof-$tool > $OUT/prof-$tool.log 2>&1
done
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|Recompil\|Graph break" $OUT/*.log | sort | uniq -c | sort -rn | head -40 | cut -c1-300
python3 - <<'PY'
import json, glob, os
for f in sorted(glob.glob(os.environ["OUT"] + "/prof-*/speed.json")):
    for r in json.load(open(f))["results"]:
        p = r.get("profile", {})
        print(r["tool"], "wall", p.get("wall_ms_profiled"), "gpu", p.get("families_ms"))
        print("  syncs", p.get("host_syncs"))
        for k, ms, n in p.get("host_top_self_ms", [])[:14]:
            print(f"  {ms:8.2f} ms {n:6d}x {k}")
PY
