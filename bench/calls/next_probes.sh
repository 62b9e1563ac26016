# Prepared in session 5 for the next GPU session (one H200, ~3-4 min): both probes in one call. cuDNN attention on
# packed rows (bench/cudnn_varlen_probe.py) and one MoE layer eager / compiled / CUDA-graphed
# (bench/moe_layer_graphs.py): which of the two levers issue 7 still needs is worth building.
source bench/calls/prelude.sh
python3 bench/cudnn_varlen_probe.py > $OUT/cudnn_probe.json 2> $OUT/cudnn_probe.log
cat $OUT/cudnn_probe.json; tail -3 $OUT/cudnn_probe.log
python3 bench/moe_layer_graphs.py > $OUT/moe_layer_graphs.json 2> $OUT/moe_layer_graphs.log
cat $OUT/moe_layer_graphs.json; grep -v -i warn $OUT/moe_layer_graphs.log | tail -20
