# Prepared in session 5 for the next GPU session (one H200, ~1-2 min): can cuDNN's attention run packed rows
# (forward, backward, as a compiled custom op), and how fast against the varlen FlashAttention kernel used today.
source bench/calls/prelude.sh
python3 bench/cudnn_varlen_probe.py > $OUT/cudnn_probe.json 2> $OUT/cudnn_probe.log
cat $OUT/cudnn_probe.json; tail -5 $OUT/cudnn_probe.log
