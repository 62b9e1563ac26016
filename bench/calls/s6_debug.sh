# Session 6, third call: why captures after the first bucket fail in the tiny GPU test (not in the V2-Lite bench).
source bench/calls/prelude.sh
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/test/*.whl 2>/dev/null
timeout 60 python3 bench/graphed_layers_check.py 0,3,4 2>&1 | grep -v Warn | tail -25
timeout 60 python3 bench/graphed_layers_check.py 3,0,4 2>&1 | grep -v Warn | tail -8
