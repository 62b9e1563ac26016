"""Session 13, on the CPU: Inductor's code generation for CUDA of the recomputation's graphs, without a GPU.

  python bench/calls/s13_fake_cuda_codegen_probe.py on|off [hidden intermediate]   # TOKENS=64 by default
  BUILD=1 TOKENS=4096 python bench/calls/s13_fake_cuda_codegen_probe.py on|off     # session 14: kernels built too
  PACKED=2 TOKENS=64 python bench/calls/s13_fake_cuda_codegen_probe.py on 512 1024 # session 14: the GPU rows' packing

Needs a CUDA build of torch with its triton (the GPU machine's versions: torch 2.11.0, transformers 5.17.0, peft
0.21.2) but no GPU or driver. Two 7B-wide Llama layers run on the CPU as in s12_cpu_codegen_probe.py (offloaded
checkpoints, one-node LoRA, each layer compiled), with (`on`) and without (`off`) train.lean_recompute's skipped down
projection. Every graph AOTAutograd hands to Inductor is also compiled for a fake H100: its inputs become fake CUDA
tensors and torch.cuda's queries answer for an H100, so Inductor lowers, schedules and writes the Triton kernels and
the wrapper as it would on the GPU; kernels are not built (CachingAutotuner.precompile is a no-op; with BUILD=1
Triton builds each one for sm_90 in this process, through LLVM and its own ptxas, without loading it) and there is no
compile pool. The CPU run itself goes on with the graphs run eagerly. Prints Inductor's seconds per phase for each
graph. Sdpa attention, not the GPU's. bench/RESULTS.md, session 13.
"""
import collections
import contextlib
import copy
import os
import re
import sys
import time
from unittest import mock  # patches torch.cuda's device queries for the fake H100 (a probe, not a test)

import torch
torch._dynamo.config.specialize_float = True  # the norms' eps as constants, as dynamo ends up with after a restart
skip = sys.argv[1] == "on"
H, I = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (4096, 11008)

# --- a fake H100 for Inductor ---
Props = collections.namedtuple("Props", "name major minor multi_processor_count total_memory regs_per_multiprocessor max_threads_per_multi_processor warp_size L2_cache_size shared_memory_per_block_optin gcnArchName")
PROPS = Props("NVIDIA H100 80GB HBM3", 9, 0, 132, 80 * 2**30, 65536, 2048, 32, 50 * 2**20, 232448, "")
@contextlib.contextmanager
def fake_h100():
    with contextlib.ExitStack() as st:
        for name, fn in dict(get_device_properties=lambda *a, **k: PROPS, get_device_capability=lambda *a, **k: (9, 0),
                             current_device=lambda: 0, device_count=lambda: 1, is_available=lambda: True,
                             _lazy_init=lambda: None, set_device=lambda *a: None,
                             get_rng_state=lambda *a, **k: torch.zeros(16, dtype=torch.uint8),
                             set_rng_state=lambda *a, **k: None, is_initialized=lambda: True,
                             synchronize=lambda *a, **k: None, _exchange_device=lambda i: 0, _maybe_exchange_device=lambda i: 0).items():
            st.enter_context(mock.patch.object(torch.cuda, name, fn))
        from torch._dynamo.device_interface import CudaInterface as CI
        for name, fn in dict(get_device_properties=lambda *a, **k: PROPS, current_device=lambda: 0,
                             set_device=lambda *a: None, device_count=lambda: 1, synchronize=lambda *a, **k: None,
                             exchange_device=lambda i: 0, maybe_exchange_device=lambda i: 0,
                             get_raw_stream=lambda *a: 0, is_bf16_supported=lambda *a, **k: True).items():
            st.enter_context(mock.patch.object(CI, name, staticmethod(fn)))
        st.enter_context(mock.patch.object(CI.Worker, "get_device_properties", staticmethod(lambda *a, **k: PROPS)))
        st.enter_context(mock.patch.object(CI.Worker, "current_device", staticmethod(lambda: 0)))
        import torch._inductor.scheduler as SCH
        st.enter_context(mock.patch.object(SCH, "has_triton", lambda: True))
        yield
from torch._inductor.runtime.triton_heuristics import CachingAutotuner
BUILDS = []  # (kernel, configs, seconds) when BUILD=1
def _build_only(self, *a, **k):
    # BUILD=1: Triton builds each kernel for sm_90 (LLVM, then the ptxas Triton ships) without loading it; a GPU is
    # needed only to load and launch
    if os.environ.get("BUILD") != "1":
        return
    n, t0 = len(self.configs or ()), time.time()
    self._precompile_worker()
    BUILDS.append((self.inductor_meta.get("kernel_name", "?"), n, time.time() - t0))
CachingAutotuner.precompile = _build_only
torch._inductor.config.compile_threads = 1
torch._inductor.config.fx_graph_cache = False
import torch.utils._triton as triton_utils
triton_utils.triton_hash_with_backend = lambda: "no-driver"
triton_utils.triton_backend = lambda: None
import torch._inductor.runtime.triton_helpers as TH
TH.set_driver_to_gpu = lambda: None
import torch._inductor.async_compile as AC
KERNELS = []
_orig_triton = AC.AsyncCompile.triton
def _log(self, name, src, device_str="cuda"):
    kind = re.search(r"@triton_heuristics\.(\w+)", src)
    KERNELS.append((name, len(src), kind.group(1) if kind else "?"))
    return _orig_triton(self, name, src, device_str)
AC.AsyncCompile.triton = _log

import torch._inductor.compile_fx as CFX
from torch._dynamo.utils import compilation_time_metrics
real_compile_fx = CFX.compile_fx
GRAPH = [0]

def _to_cuda(a):
    if isinstance(a, torch.device) and a.type == "cpu":
        return torch.device("cuda", 0)
    if isinstance(a, (list, tuple)):
        return type(a)(_to_cuda(x) for x in a)
    if isinstance(a, dict):
        return {k: _to_cuda(v) for k, v in a.items()}
    return a

real_inner = CFX.compile_fx_inner

def fake_cuda_inner(gm, example_inputs, **kw):
    GRAPH[0] += 1
    g = copy.deepcopy(gm)
    for n in g.graph.nodes:
        n.args, n.kwargs = _to_cuda(n.args), _to_cuda(n.kwargs)
    g.recompile()
    fm = torch._guards.detect_fake_mode(example_inputs)
    with fm:
        ins = [x.to("cuda") if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() else x
               for x in example_inputs]
    before = {k: sum(v) for k, v in compilation_time_metrics.items()}
    nk = len(KERNELS)
    t0 = time.time()
    try:
        with fake_h100():
            real_inner(g, ins, **kw)
        status = "ok"
    except Exception as e:
        status = f"{type(e).__name__}: {str(e)[:300]}"
    print(f"== graph {GRAPH[0]} ({'bw' if kw.get('is_backward') else 'fw'}): fake-cuda compile {time.time() - t0:.1f} s, "
          f"{len(KERNELS) - nk} kernels, {status}", flush=True)
    for k, v in compilation_time_metrics.items():
        d = sum(v) - before.get(k, 0)
        if d > 0.2:
            print(f"   {k}: {d:.1f} s")
    from torch._functorch.aot_autograd import make_boxed_func
    return make_boxed_func(gm.forward)  # the CPU run goes on eagerly

def fake_cuda_compile(gm, example_inputs, **kw):
    return real_compile_fx(gm, example_inputs, inner_compile=fake_cuda_inner, **kw)

CFX.compile_fx = fake_cuda_compile

from probe_model import offloaded_lora_llama
m = offloaded_lora_llama(H, I, skip)
m.train()
T = int(os.environ.get("TOKENS", "64"))
ids = torch.randint(0, 256, (1, T))
batch = dict(input_ids=ids, labels=ids)
if os.environ.get("PACKED"):  # session 14: PACKED=N equal samples in one row through seektune_varlen, as on the GPU
    from seektune.training.speed import VARLEN, packed_collator, register_varlen_attention
    register_varlen_attention(); m.set_attn_implementation(VARLEN)
    length = T // int(os.environ["PACKED"])
    chunks = [ids[0, i:i + length].tolist() for i in range(0, T - length + 1, length)]
    batch = packed_collator()([{"input_ids": c, "labels": c} for c in chunks])
t0 = time.time()
m(**batch).loss.backward()
print(f"skip {skip}: total {time.time() - t0:.1f} s, kernels {len(KERNELS)}")
for k in KERNELS: print("kernel", *k)
for name, n, sec in BUILDS: print(f"built {name}: {n} configs, {sec:.1f} s")
if BUILDS: print(f"built {len(BUILDS)} kernels in {sum(b[2] for b in BUILDS):.1f} s")
