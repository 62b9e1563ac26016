"""Session 12, on the CPU: the recomputation's compiled graph of two 7B-wide Llama layers, with (`on`) and without
(`off`) train.lean_recompute's skipped down projection. Needs a CUDA build of torch with its triton (the GPU
machine's versions: torch 2.11.0, transformers 5.17.0, peft 0.21.2) but no GPU.

  python bench/calls/s12_cpu_codegen_probe.py on|off triton   # Inductor's Triton code generation, kernels not built
  TORCH_LOGS=aot_graphs python bench/calls/s12_cpu_codegen_probe.py on|off cpp 256 512   # the partitioned graphs

The offloaded layer in eval mode runs its compiled code with gradients, i.e. the recomputation's joint graph; with
`triton`, Inductor writes Triton kernels for the CPU (cpu_backend="triton") and stops before building them (no
Triton CPU backend), and the script prints torch.compile's seconds per phase and each kernel generated. Sdpa
attention, not the GPU's varlen FlashAttention. bench/RESULTS.md, session 12.
"""
import re
import sys
import time

import torch

mode = sys.argv[1] == "on"
backend = sys.argv[2] if len(sys.argv) > 2 else "triton"
hidden, intermediate = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (4096, 11008)
kernels = []
if backend == "triton":  # generate Triton code for the CPU without a driver; building the kernels is skipped
    import torch._inductor.async_compile as async_compile
    import torch._inductor.runtime.triton_heuristics as heuristics
    import torch.utils._triton as triton_utils

    torch._inductor.config.cpu_backend = "triton"
    triton_utils.triton_hash_with_backend = lambda: "no-driver"
    triton_utils.triton_backend = lambda: None
    heuristics.CachingAutotuner.precompile = lambda self, *a, **k: None
    generate = async_compile.AsyncCompile.triton

    def logged(self, name, source, device_str="cuda"):
        kind = re.search(r"@triton_heuristics\.(\w+)", source)
        hints = re.search(r"size_hints=(\{[^}]*\})", source)
        kernels.append((name, len(source), kind.group(1) if kind else "?", hints.group(1) if hints else ""))
        return generate(self, name, source, device_str)

    async_compile.AsyncCompile.triton = logged

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps, recomputing_for_backward  # noqa: E402
from seektune.training.offload import offload_layer_inputs  # noqa: E402
from seektune.training.speed import compile_layers  # noqa: E402

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                  num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128)
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.enable_input_require_grads()
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
fuse_lora_linears(model), fuse_lora_mlps(model)
offload_layer_inputs(model, skip_unused_mlp_output=mode)
compile_layers(model)
model.eval()
ids = torch.randint(0, 256, (1, 64))
t0 = time.time()
try:
    with recomputing_for_backward():
        model(input_ids=ids, labels=ids).loss.backward()
except Exception as e:  # with `triton`, the first launch of an unbuilt kernel ends the run, after code generation
    print(f"stopped: {type(e).__name__}")
print(f"skip {mode}: {time.time() - t0:.1f} s")
from torch._dynamo.utils import compilation_time_metrics  # noqa: E402

for name, values in compilation_time_metrics.items():
    if sum(values) > 0.3:
        print(f"  {name}: {sum(values):.1f} s")
for kernel in kernels:
    print("kernel", *kernel)
