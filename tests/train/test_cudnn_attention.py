"""cuDNN attention on packed rows (`train.attention: seektune_cudnn`, training/cudnn_attention.py).

On the CPU: the setting is refused with what it needs, the boundary bookkeeping is checked, and the attention
function hands anything that is not a packed CUDA row to sdpa. On a GPU with the cudnn frontend: forward and
backward against per-sample attention in fp32, one graph pair per bucket, compiled and CUDA-graph-captured calls,
and a model's loss and gradients against the varlen FlashAttention path."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoConfig

from seektune.config import TrainSection
from seektune.training import cudnn_attention as ca
from seektune.training.speed import CUDNN, VARLEN, decide

GPU_REASON = ca.unavailable()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"cuDNN attention needs {GPU_REASON}")


def _llama_config():
    return AutoConfig.for_model("llama", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                num_key_value_heads=4, intermediate_size=128, vocab_size=128)


def test_the_setting_says_what_it_needs():
    cfg = _llama_config()
    with pytest.raises(ValueError, match="needs train.packing on"):
        decide(TrainSection(attention=CUDNN, packing=False), cfg, "cuda")
    if GPU_REASON is not None:
        with pytest.raises(ValueError, match="seektune_cudnn needs"):
            decide(TrainSection(attention=CUDNN, packing=True), cfg, "cuda")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        decide(TrainSection(attention=CUDNN, packing=True), cfg, "cpu")


def test_boundaries_become_lengths_and_offsets_with_empty_samples_at_the_end():
    # The execute-time tensors of a bucket of 4 samples for a row of 3 (12 heads, d_qk 192, d_v 128): lengths, and
    # each tensor's ragged offsets in its own elements; the missing sample is zero-length at the row's end.
    graphs = object.__new__(ca._Graphs)  # the bookkeeping alone: building graphs needs the GPU
    graphs.B, graphs.H, graphs.d_qk, graphs.d_v = 4, 12, 192, 128
    meta = graphs.boundaries(torch.tensor([0, 700, 1700, 2048], dtype=torch.int32))
    assert meta[ca.SEQ_Q].view(-1).tolist() == [700, 1000, 348, 0]
    starts = [0, 700, 1700, 2048, 2048]
    assert meta[ca.OFF_Q].view(-1).tolist() == [s * 12 * 192 for s in starts]
    assert meta[ca.OFF_V].view(-1).tolist() == meta[ca.OFF_O].view(-1).tolist() == [s * 12 * 128 for s in starts]
    assert meta[ca.OFF_STATS].view(-1).tolist() == [s * 12 for s in starts]
    assert meta[ca.SEQ_Q].dtype == torch.int32 and meta[ca.OFF_Q].dtype == torch.int64
    assert meta[ca.OFF_Q].shape == (5, 1, 1, 1) and meta[ca.SEQ_Q].shape == (4, 1, 1, 1)


def test_buckets_are_powers_of_two():
    assert [ca._pow2(n, 1) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    assert [ca._pow2(n, 64) for n in (10, 64, 65, 2048, 2049)] == [64, 64, 128, 2048, 4096]


def test_anything_but_a_packed_cuda_row_goes_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 10, 16) for _ in range(3))

    class Attn(torch.nn.Module):
        is_causal = True

    got, _ = ca.cudnn_attention_forward(Attn(), q, k, v, None, scaling=0.25)
    want, _ = sdpa_attention_forward(Attn(), q, k, v, None, scaling=0.25)
    assert torch.equal(got, want)


# ---- on a GPU ---------------------------------------------------------------------------------------------


def _row(lengths, heads, d_qk, d_v, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    total = sum(lengths)
    q, k = (torch.randn(total, heads, d_qk, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    v = torch.randn(total, heads, d_v, device="cuda", dtype=torch.bfloat16, generator=g)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], device="cuda", dtype=torch.int32)
    return q, k, v, cu


def _reference(q, k, v, cu, scale, grad_out):
    """Per-sample causal attention in fp32: output and gradients of q, k, v."""
    q, k, v = (t.detach().float().requires_grad_() for t in (q, k, v))
    outs = []
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        outs.append(torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=True,
            scale=scale).transpose(0, 1))
    out = torch.cat(outs)
    out.backward(grad_out.float())
    return out.detach(), q.grad, k.grad, v.grad


def _rel(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


@needs_gpu
@pytest.mark.parametrize("heads,d_qk,d_v", [(32, 128, 128), (16, 192, 128)], ids=["llama-7b", "mla"])
def test_forward_and_backward_match_per_sample_attention_through_one_bucket(heads, d_qk, d_v):
    scale = d_qk ** -0.5
    built = ca.built_buckets()
    for lengths in ([700, 1000, 348], [2048], [100] * 7 + [1348], [600, 400, 24]):  # 8 samples, 2048 tokens at most
        q, k, v, cu = _row(lengths, heads, d_qk, d_v)
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out, _ = ca.packed_attention(q, k, v, cu, scale)
        grad_out = torch.randn_like(out)
        out.backward(grad_out)
        ref = _reference(q, k, v, cu, scale, grad_out)
        for name, got, want in zip(("out", "dq", "dk", "dv"), (out, q.grad, k.grad, v.grad), ref):
            assert _rel(got, want) < 0.05, (lengths, name, _rel(got, want))
    # [2048] and [600, 400, 24] share buckets with the others: (1|4|8 samples, 1024|2048 tokens)
    assert ca.built_buckets() - built <= 4


@needs_gpu
def test_compiled_and_cuda_graph_captured_calls_give_the_eager_answers():
    q, k, v, cu = _row([300, 500, 224], 8, 128, 128, seed=1)
    grad_out = torch.randn(q.shape[0], 8, 128, device="cuda", dtype=torch.bfloat16)

    def step(q, k, v):
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out, _ = ca.packed_attention(q, k, v, cu, 0.125)
        out.backward(grad_out)
        return out.detach(), q.grad, k.grad, v.grad

    eager = step(q, k, v)
    compiled = torch.compile(step, dynamic=True)(q, k, v)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)
    # capture (after a warm-up on a side stream, as CUDA-graphed layers do) and replay on the same buffers
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(q, k, v)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(q, k, v)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        assert torch.equal(a, b)


@needs_gpu
def test_a_packed_model_trains_as_with_varlen_flash_attention():
    from transformers import AutoModelForCausalLM

    from seektune.training.speed import prepare_model_for_fast_path

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_llama_config(), dtype=torch.bfloat16).cuda()
    lengths = [40, 70, 18]
    ids = torch.randint(0, 128, (1, sum(lengths)), device="cuda")
    pos = torch.cat([torch.arange(n) for n in lengths]).view(1, -1).cuda()
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device="cuda")
    batch = dict(input_ids=ids, labels=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                 max_length_q=max(lengths), max_length_k=max(lengths))
    results = {}
    for attention in (VARLEN, CUDNN):
        fast = decide(TrainSection(attention=attention, packing=True, compile=False, fused_loss=False),
                      model.config, "cuda")
        prepare_model_for_fast_path(model, fast)
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        results[attention] = (loss.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert abs(results[VARLEN][0] - results[CUDNN][0]) < 1e-2
    assert _rel(results[CUDNN][1], results[VARLEN][1]) < 0.05
