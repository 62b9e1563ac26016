# Session 6, the budget's last minutes: do compiled layers capture inside the graphed checkpoint on the GPU (the
# session-6 layer probe's make_graphed_callables over a compiled layer failed)? Tiny MoE, gradients against torch's
# checkpointing; no timing.
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/test/*.whl 2>/dev/null
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/train/test_layer_graphs.py -k "cuda" > $OUT/pytest.log 2>&1
grep -E "[0-9]+ (passed|failed)|^E |FAILED" $OUT/pytest.log | cut -c1-600 | head -20
