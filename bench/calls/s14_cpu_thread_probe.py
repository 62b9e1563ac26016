"""Session 14, on the CPU: is the skip's slow first step on the GPU a matter of where the recomputation compiles?

  python bench/calls/s14_cpu_thread_probe.py on|off main|thread     # THREADS=2 compile workers by default

On a GPU, loss.backward() hands the backward pass to the autograd engine's device thread, so the recomputation's
graphs (train.lean_recompute's and the default's alike) are compiled there; on the CPU the engine runs on the calling
thread. `thread` calls backward from a second Python thread, `main` from the main one. Two 1024-wide Llama layers,
offloaded checkpoints, one-node LoRA, compiled layers, Inductor's cpp backend with its real compile pool; three steps
of 256, 384 and 256 tokens from an empty cache (set TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR to fresh folders).
Prints each step's seconds and torch.compile's seconds per phase. bench/RESULTS.md, session 14.
"""
import os
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
skip, where = sys.argv[1] == "on", sys.argv[2]
torch._inductor.config.compile_threads = int(os.environ.get("THREADS", "2"))

from peft import LoraConfig, get_peft_model  # noqa: E402
from torch._dynamo.utils import compilation_time_metrics, counters  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps  # noqa: E402
from seektune.training.offload import offload_layer_inputs  # noqa: E402
from seektune.training.speed import compile_layers  # noqa: E402

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=256, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=8)
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.enable_input_require_grads()
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
fuse_lora_linears(model), fuse_lora_mlps(model)
offload_layer_inputs(model, skip_unused_mlp_output=skip)
compile_layers(model)
model.train()

for i, tokens in enumerate((256, 384, 256)):
    ids = torch.randint(0, 256, (1, tokens))
    t0 = time.time()
    loss = model(input_ids=ids, labels=ids).loss
    if where == "main":
        loss.backward()
    else:
        worker = threading.Thread(target=loss.backward)
        worker.start(), worker.join()
    print(f"skip {skip}, backward on {'the main thread' if where == 'main' else 'a second thread'}: step {i} ({tokens} tokens) {time.time() - t0:.1f} s", flush=True)
for phase in ("compile_attempt_0", "compile_attempt_1", "compile_fx.<locals>.fw_compiler_base",
              "compile_fx.<locals>.bw_compiler", "Scheduler.codegen", "async_compile.wait"):
    if phase in compilation_time_metrics:
        print(f"  {phase}: {sum(compilation_time_metrics[phase]):.1f} s")
print("  inductor:", dict(counters["inductor"]), "aot_autograd:", dict(counters["aot_autograd"]))
