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

from probe_model import offloaded_lora_llama  # noqa: E402

from seektune.training.lora_fused import recomputing_for_backward  # noqa: E402

model = offloaded_lora_llama(hidden, intermediate, mode)
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
