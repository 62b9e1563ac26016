# Prepared in session 5 for the next GPU session (one H200, ~2 min): one V2-Lite MoE decoder layer with seektune's
# LoRA on a ~1 900-token packed row, forward+backward eager / compiled / CUDA-graphed / graphed after compiling:
# how much of the MoE step's host time a CUDA graph would remove, before building one into training.
source bench/calls/prelude.sh
python3 bench/moe_layer_graphs.py > $OUT/moe_layer_graphs.json 2> $OUT/moe_layer_graphs.log
cat $OUT/moe_layer_graphs.json; grep -v -i warn $OUT/moe_layer_graphs.log | tail -20
