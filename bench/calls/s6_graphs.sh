# Session 6, one H200: graphed checkpointed layers (training/layer_graphs.py). Their GPU test, then the V2-Lite MoE
# shape on real conversations: plain PEFT vs seektune without and with the graphs, going round 10 batches
# (--cycle 10, 10 warm-up steps) so the timed steps are the steady state of a long run. Then the cuDNN probe.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/test/*.whl 2>/dev/null
timeout 200 python3 -m pytest -x -q -p no:cacheprovider tests/train/test_layer_graphs.py > $OUT/pytest.log 2>&1
tail -25 $OUT/pytest.log | grep -v "Warning\|warn"
timeout 420 python3 bench/train_speed.py run --models v2lite --tools hf,seektune-nographs,seektune-graphs --ckpt on \
  --cycle 10 --warmup 10 --steps 20 --timeout 300 --weights-root /tmp/w --out $OUT/moe > $OUT/moe.log 2>&1
find $OUT -name speed.md -delete
grep -h "tok/s\|Error\|failed\|graphed" $OUT/*.log | cut -c1-400
timeout 100 python3 bench/cudnn_varlen_probe.py > $OUT/cudnn_probe.json 2> $OUT/cudnn_probe.log; head -c 3000 $OUT/cudnn_probe.json
