# Session 10, last call (one GPU, little device time left): the tiny probe with the skipped down projection on, then
# off (bench/calls/s10_c_probe.py), thread stacks every 25 s.
source bench/calls/prelude.sh
TORCH_LOGS=recompiles timeout 70 python3 bench/calls/s10_c_probe.py on 2>&1 | grep -v "^\s*$" | cut -c1-200 | tail -45
timeout 60 python3 bench/calls/s10_c_probe.py off 2>&1 | grep "mark\|Error" | tail -8
