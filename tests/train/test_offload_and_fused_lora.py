"""Offloaded checkpointing and one-node LoRA linears change where tensors live and where sums happen, not what is
learned: the same gradients as torch's checkpointing and PEFT's own LoRA forward, in eager mode and compiled."""

from __future__ import annotations

import copy

import pytest
import torch

import seektune
from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
from seektune.training.offload import HostLedger, offload_layer_inputs
from seektune.training.speed import compile_layers
from tests.conftest import shared

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_llama(dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attention_dropout=dropout)
    return LlamaForCausalLM(cfg)


def _ids():
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _train_step(model, seed=5):
    torch.manual_seed(seed)  # the attention-dropout masks
    ids = _ids()
    model(input_ids=ids, labels=ids).loss.backward()
    return _grads(model)


def test_offloaded_checkpointing_gives_torch_checkpointings_gradients():
    """Attention dropout is on, so the recomputation only matches if the RNG state is restored for it."""
    grads = []
    for offload in (False, True):
        model = _tiny_llama(dropout=0.2).train()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        if offload:
            assert offload_layer_inputs(model) == 3
        grads.append(_train_step(model))
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 30
    for name, g in grads[0].items():
        assert torch.equal(g, grads[1][name]), name
    with torch.no_grad():  # evaluation and generation run the layers directly
        assert model.eval()(input_ids=_ids()).logits.shape == (2, 24, 256)


def test_offloaded_layers_keep_no_graph_between_forward_and_backward():
    """What autograd saves during the forward pass: torch's checkpointing saves nothing inside the layers but keeps
    their inputs alive by reference; the offloaded node hands each input to the ledger instead."""
    model = _tiny_llama().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    offload_layer_inputs(model)
    stored = []
    ledger = model.model.layers[0]._seektune_checkpointing.ledger
    original = ledger.store
    ledger.store = lambda t: (stored.append(t.shape), original(t))[1]
    _train_step(model)
    assert stored == [torch.Size([2, 24, 32])] * 3  # one input per layer, nothing else


def test_offloaded_and_compiled_layers_match_eager():
    grads = []
    for compiled in (False, True):
        model = _tiny_llama().train()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        offload_layer_inputs(model)
        if compiled:
            assert compile_layers(model) == 3  # inside the offloaded nodes
        grads.append(_train_step(model))
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned host memory and copy streams need a CUDA GPU")
def test_host_ledger_round_trip_and_prefetch_on_gpu():
    ledger = HostLedger()
    tensors = [torch.randn(64, 32, device="cuda") + i for i in range(3)]
    slots = [ledger.store(t) for t in tensors]
    assert all(s.tensor is None and s.host.is_pinned() for s in slots)
    back = ledger.fetch(slots[2])
    assert slots[1].back is not None  # the next one backward needs is already on its way
    assert torch.equal(back, tensors[2]) and torch.equal(ledger.fetch(slots[1]), tensors[1])
    assert torch.equal(ledger.fetch(slots[0]), tensors[0])


def _peft(model, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=ALL_LINEAR,
                                            init_lora_weights=False))  # B != 0: the update shows in the output


# bf16: PEFT runs the adapter in fp32 (it upcasts x); the fused node runs it in bf16 with fp32 accumulation.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 6e-2)])
def test_fused_lora_matches_peft(dtype, tol):
    plain = _peft(_tiny_llama().to(dtype)).train()
    fused = copy.deepcopy(plain)
    assert fuse_lora_linears(fused) == 21
    ids = _ids()
    out = [m(input_ids=ids, labels=ids) for m in (plain, fused)]
    assert torch.allclose(out[0].logits.float(), out[1].logits.float(), atol=tol * 10)
    for o in out:
        o.loss.backward()
    grads = [_grads(plain), _grads(fused)]
    assert len(grads[0]) == 42 and grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert g.dtype == torch.float32 or dtype == torch.bfloat16  # adapter weights keep their dtype
        err = (g.float() - grads[1][name].float()).abs().max() / g.float().abs().max()
        assert err < tol, (name, err)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 6e-2)])
def test_fused_mlp_matches_peft_and_keeps_two_intermediates(dtype, tol):
    """The SwiGLU node: PEFT's outputs and gradients, with the (tokens x intermediate) tensors kept for the backward
    pass down from four (gate, silu(gate), up, their product) to two."""
    plain = _peft(_tiny_llama().to(dtype)).train()
    fused = copy.deepcopy(plain)
    fuse_lora_linears(fused)
    assert fuse_lora_mlps(fused) == 3
    ids = _ids()
    kept = []
    for model in (plain, fused):
        wide = []

        def keep(t):  # activations as wide as the MLP (48 tokens x intermediate 64), not weights
            if t.dim() >= 2 and t.shape[-1] == 64 and t.numel() >= 48 * 64:
                wide.append(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        kept.append(len(set(wide)))
    assert kept == [4 * 3, 2 * 3]  # per layer: gate and up outputs; PEFT also silu(gate) and the product
    grads = [_grads(plain), _grads(fused)]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 42
    for name, g in grads[0].items():
        err = (g.float() - grads[1][name].float()).abs().max() / g.float().abs().max()
        assert err < tol, (name, err)


def test_fused_mlp_compiles_without_graph_breaks():
    import torch._dynamo.utils as dynamo_utils

    from seektune.training.speed import compile_layers

    plain = _peft(_tiny_llama()).train()
    fused = copy.deepcopy(plain)
    fuse_lora_linears(fused)
    fuse_lora_mlps(fused)
    compile_layers(fused)
    dynamo_utils.counters.clear()
    grads = [_train_step(plain), _train_step(fused)]
    assert not dynamo_utils.counters["graph_break"]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name


def test_fused_lora_steps_aside_where_peft_must_run():
    """Disabled or merged adapters and LoRA dropout go through PEFT's own forward."""
    fused = _peft(_tiny_llama()).eval()
    fuse_lora_linears(fused)
    fuse_lora_mlps(fused)
    base = _tiny_llama().eval()
    ids = _ids()
    with torch.no_grad():
        with fused.disable_adapter():
            assert torch.equal(fused(input_ids=ids).logits, base(input_ids=ids).logits)
        adapted = fused(input_ids=ids).logits
        assert not torch.allclose(adapted, base(input_ids=ids).logits)
        fused.merge_adapter()
        assert torch.allclose(fused(input_ids=ids).logits, adapted, atol=1e-5)
    assert fuse_lora_linears(_peft(_tiny_llama(), dropout=0.1)) == 0
    # Fusing twice changes nothing, and a base weight that trains takes PEFT's path (the node has no grad for it).
    assert fuse_lora_linears(fused) == 21
    q_proj = fused.base_model.model.model.layers[0].self_attn.q_proj
    q_proj.base_layer.weight.requires_grad_(True)
    fused.unmerge_adapter()
    fused.train()(input_ids=ids).logits.sum().backward()
    assert q_proj.base_layer.weight.grad is not None


def test_fused_lora_compiles_without_graph_breaks():
    import torch._dynamo.utils as dynamo_utils

    from seektune.training.speed import compile_layers

    plain = _peft(_tiny_llama()).train()
    fused = copy.deepcopy(plain)
    fuse_lora_linears(fused)
    assert compile_layers(fused) == 3
    dynamo_utils.counters.clear()
    grads = [_train_step(plain), _train_step(fused)]
    assert not dynamo_utils.counters["graph_break"]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name


def test_compiled_lora_layers_add_the_update_where_the_output_lies():
    # Compiled, a plain `addmm_` became an out-of-place addmm that first copies the linear's output into a new
    # buffer: 18 ms of a 350 ms step on the 7B shape (bench/RESULTS.md, session 9). The products must add into the
    # output and the input gradient in place, with no copy of a (tokens x features) tensor.
    from torch.profiler import ProfilerActivity, profile

    fused = _peft(_tiny_llama()).train()
    fuse_lora_linears(fused)
    fuse_lora_mlps(fused)
    assert compile_layers(fused) == 3
    _train_step(fused)  # compiles
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _train_step(fused)
    tokens = _ids().numel()
    events = prof.events()
    in_place = [e for e in events if e.name == "seektune::addmm_into"]
    copies = [e.input_shapes[0] for e in events if e.name in ("aten::copy_", "aten::clone")
              and e.input_shapes and len(e.input_shapes[0]) == 2 and e.input_shapes[0][0] == tokens]
    assert copies == []
    # Forward: each layer's 7 LoRA outputs. Backward: each linear's low-rank input gradient, plus the up projection's
    # sum into the gate's; the first layer's q, k and v have no input gradient (the embeddings are frozen).
    assert len(in_place) == 3 * 7 + (3 * 8 - 3)


def test_offloaded_recomputation_leaves_out_the_mlp_output_nothing_reads():
    """A checkpointed layer runs again in the backward pass only to rebuild what its backward needs; the layer's
    output, `residual + mlp(x)`, just anchors the graph, and the sum's gradient needs no values. So the one-node MLP
    leaves its down projection out of the recomputation: one (tokens x intermediate) @ (intermediate x hidden)
    product per layer and step instead of two, with the same gradients, eager and compiled."""
    import torch._dynamo.utils as dynamo_utils
    from torch.profiler import ProfilerActivity, profile

    tokens = _ids().numel()
    # h @ W_down.T; the backward's input-gradient product of the gate projection, d(gate) @ W_gate, has these shapes
    # too and is counted once per layer in every setup.
    down_product = [[tokens, 64], [64, 32]]
    grads, downs = {}, {}
    for setup in ("torch checkpoint", "offloaded", "offloaded, compiled"):
        model = _peft(_tiny_llama()).train()
        fuse_lora_linears(model)
        assert fuse_lora_mlps(model) == 3
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        if setup != "torch checkpoint":
            assert offload_layer_inputs(model, skip_unused_mlp_output=True) == 3
        if setup.endswith("compiled"):
            assert compile_layers(model) == 3
            _train_step(model)  # compiles
            model.zero_grad()
        dynamo_utils.counters.clear()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            grads[setup] = _train_step(model)
        assert not dynamo_utils.counters["graph_break"]
        downs[setup] = sum(e.name in ("aten::mm", "aten::addmm") and list(e.input_shapes[:2]) == down_product
                           for e in prof.events())
    # Per layer: forward, recomputation (torch's checkpoint only), backward.
    assert downs == {"torch checkpoint": 3 * 3, "offloaded": 3 * 2, "offloaded, compiled": 3 * 2}
    reference = grads["torch checkpoint"]
    assert len(reference) == 42
    for setup in ("offloaded", "offloaded, compiled"):
        for name, g in reference.items():
            assert torch.allclose(g, grads[setup][name], rtol=1e-4, atol=1e-6), (setup, name)


_EXPANSIONS = [0]


@torch.library.custom_op("seektune_test::expand_weight", mutates_args=())
def _expand_weight(w: torch.Tensor) -> torch.Tensor:
    """Stands where bitsandbytes' dequantize_4bit stands for a 4-bit base: an opaque op that makes the bf16 weight."""
    _EXPANSIONS[0] += 1
    return w * 2


@_expand_weight.register_fake
def _(w):
    return torch.empty_like(w)


def test_compiled_4bit_layers_expand_the_weight_again_in_backward_instead_of_keeping_it():
    # With AOTAutograd's joint-graph CSE the backward's expansion merges with the forward's and the partitioner
    # keeps the expanded weight alive until the backward (0.3 GiB at the 7B QLoRA peak); compiled(joint_cse=False),
    # which compile_layers uses for 4-bit models, must expand it once in each pass.
    from seektune.training.lora_fused import _LoraLinearFn
    from seektune.training.speed import compiled

    torch.manual_seed(0)
    w = torch.randn(16, 8)
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(16, 4, requires_grad=True)

    def layer(x):
        return _LoraLinearFn.apply(x, lambda: _expand_weight(w), None, a, b, 2.0).sin()

    x = torch.randn(5, 8, requires_grad=True)
    reference = torch.autograd.grad(layer(x).sum(), (x, a, b))
    per_step = {True: [], False: []}
    for joint_cse in per_step:
        torch._dynamo.reset()
        run = compiled(layer, joint_cse=joint_cse)
        for _ in range(2):  # the first call compiles; both must behave the same
            _EXPANSIONS[0] = 0
            grads = torch.autograd.grad(run(x).sum(), (x, a, b))
            per_step[joint_cse].append(_EXPANSIONS[0])
            for got, want in zip(grads, reference):
                assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    assert per_step == {True: [1, 1], False: [2, 2]}  # torch's default keeps it; seektune's 4-bit compile does not


def test_train_run_with_offload_and_fused_lora_follows_the_plain_run(tmp_path):
    """The switches (with the lean recomputation) through seektune.train on the embedded model: same losses step for
    step."""
    runs = {}
    for fast in (False, True):
        runs[fast] = seektune.train({
            "data": {"datasets": [{"path": str(shared("identity/identity.json")), "max_records": 16}],
                     "max_length": 64, "holdout_prompts": 0},
            "lora": {"dropout": 0.0},
            "train": {"max_steps": 3, "per_device_batch_size": 4, "gradient_checkpointing": True,
                      "offload_checkpoints": fast, "fused_lora": fast, "lean_recompute": fast, "save_steps": 100},
            "output": str(tmp_path / f"fast-{fast}"),
        })
    assert runs[True].info["fast_path"]["fused_lora"] is True and runs[True].info["fast_path"]["lean_recompute"]
    assert runs[False].info["fast_path"]["fused_lora"] is False
    for a, b in zip(runs[False].step_metrics, runs[True].step_metrics, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)


def test_a_deep_copy_of_a_fused_model_trains_its_own_weights():
    """The one-node forwards are bound to their module, so a copy's nodes use the copy's LoRA weights."""
    model = _peft(_tiny_llama()).train()
    assert fuse_lora_linears(model) == 21 and fuse_lora_mlps(model) == 3
    twin = copy.deepcopy(model)
    grads = [_train_step(model), _train_step(twin)]
    assert len(grads[1]) == 42  # every LoRA weight of the copy got its gradient
    for name, g in grads[0].items():
        assert torch.equal(g, grads[1][name]), name
    with torch.no_grad():  # and the copy's weights, not the original's, are what it computes with
        for p in twin.parameters():
            if p.requires_grad:
                p.add_(0.5)
        ids = _ids()
        assert not torch.allclose(model(input_ids=ids).logits, twin(input_ids=ids).logits)
