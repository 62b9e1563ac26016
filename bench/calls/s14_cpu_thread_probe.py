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

skip, where = sys.argv[1] == "on", sys.argv[2]
torch._inductor.config.compile_threads = int(os.environ.get("THREADS", "2"))

from probe_model import offloaded_lora_llama  # noqa: E402
from torch._dynamo.utils import compilation_time_metrics, counters  # noqa: E402

model = offloaded_lora_llama(1024, 2816, skip)
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
    thread = "the main thread" if where == "main" else "a second thread"
    print(f"skip {skip}, backward on {thread}: step {i} ({tokens} tokens) {time.time() - t0:.1f} s", flush=True)
for phase in ("compile_attempt_0", "compile_attempt_1", "compile_fx.<locals>.fw_compiler_base",
              "compile_fx.<locals>.bw_compiler", "Scheduler.codegen", "async_compile.wait"):
    if phase in compilation_time_metrics:
        print(f"  {phase}: {sum(compilation_time_metrics[phase]):.1f} s")
print("  inductor:", dict(counters["inductor"]), "aot_autograd:", dict(counters["aot_autograd"]))
