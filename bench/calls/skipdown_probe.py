"""A tiny Llama (12 layers) with seektune's offloaded, compiled layers and one-node LoRA on the GPU, with (`on`) and
without (`off`) the recomputation's skipped down projection: session 10's s10_b timed out on every seektune row with
it on. Prints each step's time and the gradients' norm; thread stacks every 25 s if it hangs."""
import faulthandler
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import seektune.training.offload as offload
from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
from seektune.training.speed import compile_layers

faulthandler.dump_traceback_later(25, repeat=True, file=sys.stderr)
mark = sys.argv[1] == "on"
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=12, num_attention_heads=4,
                  num_key_value_heads=2)
m = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16)
m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
m.enable_input_require_grads()
offload.offload_layer_inputs(m, skip_unused_mlp_output=mark)
m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_proj", "up_proj", "down_proj"]))
fuse_lora_linears(m), fuse_lora_mlps(m), compile_layers(m)
m.train()
ids = torch.randint(0, 256, (2, 512), device="cuda")
for i in range(5):
    t = time.time()
    loss = m(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.cuda.synchronize()
    print(f"mark {sys.argv[1]} step {i}: {time.time() - t:.2f} s, loss {loss.item():.4f}", flush=True)
grads = sum(p.grad.float().norm() for p in m.parameters() if p.grad is not None)
print(f"mark {sys.argv[1]}: grad norm sum {grads.item():.6f}", flush=True)
