# `seektune sweep` on a machine with 2 GPUs: 4 runs, two at a time (CUDA_VISIBLE_DEVICES per run), then the same
# command again, which must find every run finished and train nothing.
# Run from the repo root with .whl carried:  bash bench/calls/sweep_2gpu.sh
[ -n "$SEEKTUNE_PRELUDE_DONE" ] || source bench/calls/prelude.sh
python3 - <<'PY'
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=True)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained("/tmp/sweep-model/small-llama")
AutoTokenizer.from_pretrained("bench/.data/tokenizer").save_pretrained("/tmp/sweep-model/small-llama")
PY
st() { python3 -c "from seektune.cli import main; main()" "$@"; }
( time st sweep bench/calls/sweep_2gpu.yaml ) > $OUT/sweep.log 2>&1
( time st sweep bench/calls/sweep_2gpu.yaml ) > $OUT/sweep_again.log 2>&1
cp /tmp/sweep-out/sweep.json $OUT/ 2>/dev/null; ls /tmp/sweep-out
grep -h "GPU\|finished\|skip\|real\|Error\|error" $OUT/sweep.log $OUT/sweep_again.log | tail -n 40
