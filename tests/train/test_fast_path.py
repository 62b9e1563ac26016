"""The fast path must not change what is learned: packed rows give every sample exactly the logits it gets alone,
the same loss as a padded batch, and a packed training run follows the padded run's losses step for step."""

from __future__ import annotations

import itertools

import pytest
import torch

import seektune
from seektune.config import DatasetSpec, TrainSection
from seektune.data.dataset import DatasetReport, load_conversations
from seektune.data.render import ChatRenderer
from seektune.training.collate import PadCollator
from seektune.training.speed import (
    VARLEN,
    decide,
    packed_collator,
    prepare_model_for_fast_path,
    register_varlen_attention,
    varlen_attention_forward,
)
from tests.conftest import shared
from tests.train.test_deepseek_v3 import tiny_v3_dir  # noqa: F401  (module fixture reused)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def _samples(tokenizer, n=4, max_length=96):
    renderer = ChatRenderer(tokenizer, None, "all_assistant", max_length)
    convs = load_conversations(DatasetSpec(path=str(shared("identity/identity.json"))), False, DatasetReport("x"))
    # Different lengths, so the padded batch really pads.
    encoded = [renderer.encode(c) for c in convs[:n]]
    assert len({len(e.input_ids) for e in encoded}) > 1
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


@pytest.fixture(scope="module", params=["smollm2", "deepseek_v3"])
def model_and_samples(request, smol_dir, tiny_v3_dir):  # noqa: F811
    model, tok = _load(smol_dir if request.param == "smollm2" else tiny_v3_dir)
    # What seektune.train does before attaching LoRA when packing is on.
    prepare_model_for_fast_path(model, decide(TrainSection(packing=True), model.config, "cpu"))
    return model, tok, _samples(tok)


@torch.no_grad()
def test_packed_row_gives_each_sample_its_own_logits(model_and_samples):
    model, tok, feats = model_and_samples
    batch = packed_collator()(feats)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    # Position ids restart at every sample: the boundaries transformers turns into a block-diagonal mask.
    starts = (batch["position_ids"][0] == 0).nonzero().view(-1).tolist()
    assert starts == batch["cu_seq_lens_q"][:-1].tolist()
    packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
    for f, a, b in zip(feats, batch["cu_seq_lens_q"][:-1], batch["cu_seq_lens_q"][1:]):
        alone = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
        # If any token saw another sample, its logits would differ by far more than float noise.
        assert torch.allclose(packed[a:b], alone, atol=2e-4), float((packed[a:b] - alone).abs().max())


@torch.no_grad()
def test_packed_loss_equals_padded_loss(model_and_samples):
    model, tok, feats = model_and_samples
    padded = PadCollator(tok.pad_token_id)(feats)
    packed = packed_collator()(feats)
    n_padded = int((padded["labels"][:, 1:] != -100).sum())
    n_packed = int((packed["labels"][0, 1:] != -100).sum())
    assert n_padded == n_packed > 0  # the same supervised tokens
    loss_padded = model(**padded).loss
    loss_packed = model(**packed).loss
    assert abs(float(loss_padded) - float(loss_packed)) < 1e-4, (float(loss_padded), float(loss_packed))


def _run(tmp_path, name, packing):
    return seektune.train({
        "data": {"datasets": [{"path": str(shared("identity/identity.json")), "max_records": 24}],
                 "max_length": 96, "holdout_prompts": 0},
        "lora": {"dropout": 0.0},
        "train": {"max_steps": 3, "per_device_batch_size": 4, "learning_rate": 1e-3, "packing": packing,
                  "save_steps": 100},
        "output": str(tmp_path / name),
    })


def test_packed_training_follows_padded_training(tmp_path):
    plain, packed = _run(tmp_path, "plain", False), _run(tmp_path, "packed", True)
    assert plain.info["fast_path"]["packing"] is False and packed.info["fast_path"]["packing"] is True
    a, b = plain.step_metrics, packed.step_metrics
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-3, (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) < 1e-2 * max(1.0, x["grad_norm"]), (x, y)
    # Both count the same real tokens: packing adds none and loses none.
    assert plain.info["fast_path"]["attention"] == packed.info["fast_path"]["attention"] == "sdpa"
    # train.gradient_checkpointing "auto" is resolved by the fast path (dense on the CPU: off); the config keeps "auto"
    assert packed.config.train.gradient_checkpointing == "auto"
    assert packed.info["fast_path"]["gradient_checkpointing"] is False


def test_auto_switches(smol_dir):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(smol_dir)
    cpu = decide(TrainSection(), cfg, "cpu")
    assert (cpu.packing, cpu.attention, cpu.liger, cpu.compile) == (False, "sdpa", False, False)
    gpu = decide(TrainSection(), cfg, "cuda")
    assert (gpu.packing, gpu.liger, gpu.compile) == (True, False, True)
    assert gpu.attention == VARLEN  # torch >= 2.9 ships the varlen FlashAttention kernel
    forced = decide(TrainSection(packing=False, attention="eager"), cfg, "cuda")
    assert (forced.packing, forced.attention) == (False, "eager")
    with pytest.raises(ValueError, match="needs train.packing"):
        decide(TrainSection(packing=False, attention=VARLEN), cfg, "cuda")
    with pytest.raises(ValueError, match="CUDA"):
        decide(TrainSection(packing=True, attention=VARLEN), cfg, "cpu")
    # One-node LoRA and offloaded checkpoints: on a GPU by default, offload only with checkpointing, not for MoE.
    assert (cpu.fused_lora, cpu.offload_checkpoints) == (False, False)
    assert (gpu.fused_lora, gpu.offload_checkpoints) == (True, False)
    assert decide(TrainSection(gradient_checkpointing=True), cfg, "cuda").offload_checkpoints is True
    assert decide(TrainSection(gradient_checkpointing=True), cfg, "cpu").offload_checkpoints is False
    moe_cfg = AutoConfig.for_model("deepseek_v2", n_routed_experts=8, num_hidden_layers=2, hidden_size=64)
    moe = decide(TrainSection(gradient_checkpointing=True), moe_cfg, "cuda")
    assert moe.offload_checkpoints is False and any("MoE" in n for n in moe.notes)
    assert decide(TrainSection(gradient_checkpointing=True, offload_checkpoints=True), moe_cfg,
                  "cuda").offload_checkpoints is True
    # The lean recomputation: only asked for, and only where offloaded checkpoints and one-node LoRA run.
    assert decide(TrainSection(gradient_checkpointing=True), cfg, "cuda").lean_recompute is False
    assert decide(TrainSection(gradient_checkpointing=True, lean_recompute=True), cfg, "cuda").lean_recompute is True
    unfused = decide(TrainSection(gradient_checkpointing=True, lean_recompute=True, fused_lora=False), cfg, "cuda")
    assert unfused.lean_recompute is False and any("lean_recompute needs" in n for n in unfused.notes)
    # CUDA-graphed checkpointed layers: MoE on a GPU, with checkpointing and without dropout; the graphs replay
    # compiled layers unless train.compile=false
    assert (moe.cuda_graphs, moe.compile, gpu.cuda_graphs, cpu.cuda_graphs) == (True, True, False, False)
    eager_graphs = decide(TrainSection(gradient_checkpointing=True, compile=False), moe_cfg, "cuda")
    assert (eager_graphs.cuda_graphs, eager_graphs.compile) == (True, False)
    dropout = decide(TrainSection(gradient_checkpointing=True), moe_cfg, "cuda", lora_dropout=0.05)
    assert (dropout.cuda_graphs, dropout.compile) == (False, True)
    assert any("lora.dropout=0" in n for n in dropout.notes)
    # Checkpointing: auto = on for MoE on a GPU where the graphs can run (they need it), off for dense models and
    # on the CPU; an explicit false wins, and then there is nothing to graph.
    auto_moe, auto_dense = decide(TrainSection(), moe_cfg, "cuda"), decide(TrainSection(), cfg, "cuda")
    assert (auto_moe.gradient_checkpointing, auto_moe.cuda_graphs, auto_moe.compile) == (True, True, True)
    assert any("gradient checkpointing on for this MoE model" in n for n in auto_moe.notes)
    assert (auto_dense.gradient_checkpointing, auto_dense.offload_checkpoints) == (False, False)
    assert decide(TrainSection(), moe_cfg, "cpu").gradient_checkpointing is False
    assert decide(TrainSection(), moe_cfg, "cuda", lora_dropout=0.05).gradient_checkpointing is False
    assert decide(TrainSection(cuda_graphs=False), moe_cfg, "cuda").gradient_checkpointing is False
    off = decide(TrainSection(gradient_checkpointing=False), moe_cfg, "cuda")
    assert (off.gradient_checkpointing, off.cuda_graphs) == (False, False)  # nothing checkpointed, nothing to graph
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        decide(TrainSection(gradient_checkpointing=True, cuda_graphs=True), moe_cfg, "cpu")
    with pytest.raises(ValueError, match="cannot both be on"):
        decide(TrainSection(gradient_checkpointing=True, cuda_graphs=True, offload_checkpoints=True), moe_cfg, "cuda")
    assert decide(TrainSection(gradient_checkpointing=True, cuda_graphs=True), cfg, "cuda").cuda_graphs is True


def test_fused_loss_switch(smol_dir):
    from transformers import AutoConfig

    from seektune.training.speed import liger_available

    cfg = AutoConfig.from_pretrained(smol_dir)
    assert decide(TrainSection(), cfg, "cpu").fused_loss is False  # Liger's kernels are Triton: GPU only
    gpu = decide(TrainSection(), cfg, "cuda")
    assert gpu.fused_loss is liger_available()
    if not liger_available():
        assert any("pip install liger-kernel" in n for n in gpu.notes)
    with pytest.raises(ValueError, match="CUDA GPU and liger-kernel"):
        decide(TrainSection(fused_loss=True), cfg, "cpu")
    assert decide(TrainSection(fused_loss=False), cfg, "cuda").fused_loss is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's fused linear+cross-entropy runs on CUDA GPUs only")
def test_fused_loss_equals_plain_loss(smol_dir):
    from transformers import AutoModelForCausalLM

    from seektune.training.speed import FastPath, liger_available, prepare_model_for_fast_path

    if not liger_available():
        pytest.skip("liger-kernel is not installed")
    ids = torch.randint(0, 1000, (2, 64), device="cuda")
    losses = []
    for fused in (False, True):
        model = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32).cuda()
        prepare_model_for_fast_path(model, FastPath(False, "sdpa", False, [], fused_loss=fused))
        model.train()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        losses.append((out.loss.item(), model.model.norm.weight.grad.clone()))
    assert abs(losses[0][0] - losses[1][0]) < 1e-4
    assert torch.allclose(losses[0][1], losses[1][1], atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlashAttention varlen runs on CUDA GPUs only")
def test_varlen_attention_matches_sdpa_per_sample():
    register_varlen_attention()
    torch.manual_seed(0)
    lens = [5, 17, 9]
    q, k, v = (torch.randn(1, 4, sum(lens), 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0, 5, 22, 31], dtype=torch.int32, device="cuda")
    out, _ = varlen_attention_forward(None, q, k, v, None, scaling=0.125, cu_seq_lens_q=cu, max_length_q=17)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], is_causal=True, scale=0.125
        ).transpose(1, 2)
        assert torch.allclose(out[:, a:b], ref, atol=2e-2)


@pytest.mark.parametrize("kv_heads,v_dim", [(4, 64), (2, 64), (4, 48)], ids=["mha", "gqa", "mla-widths"])
def test_rows_of_equal_samples_are_attended_as_a_batch(kv_heads, v_dim):
    """One sample, or samples all max_length long, go to sdpa as a batch (no layout copies): the same answer and
    gradients as causal attention within each sample, and nothing crosses a sample boundary."""
    torch.manual_seed(0)
    for lengths in ([24], [16, 16, 16]):
        total = sum(lengths)
        q = torch.randn(1, 4, total, 64, requires_grad=True)
        k = torch.randn(1, kv_heads, total, 64, requires_grad=True)
        v = torch.randn(1, kv_heads, total, v_dim, requires_grad=True)
        cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
        out, _ = varlen_attention_forward(None, q, k, v, None, scaling=0.125, cu_seq_lens_q=cu,
                                          max_length_q=max(lengths))
        assert out.shape == (1, total, 4, v_dim)
        grad = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, k, v), grad)
        refs = []
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            refs.append(torch.nn.functional.scaled_dot_product_attention(
                q[:, :, a:b], k[:, :, a:b].repeat_interleave(4 // kv_heads, 1),
                v[:, :, a:b].repeat_interleave(4 // kv_heads, 1), is_causal=True, scale=0.125).transpose(1, 2))
        ref = torch.cat(refs, dim=1)
        want = torch.autograd.grad(ref, (q, k, v), grad)
        assert torch.allclose(out, ref, atol=1e-5)
        for g, w in zip(got, want):
            assert torch.allclose(g, w, atol=1e-5)


@torch.no_grad()
def test_generation_after_packed_training_uses_sdpa_for_padded_batches(smol_dir, smol_tokenizer):
    """The varlen kernel only serves packed rows; padded prompts and KV-cache decoding fall back to sdpa, so the
    before/after answers of a GPU run are the answers sdpa gives."""
    from seektune.data.formats import Message
    from seektune.infer.generate import generate_answers

    renderer = ChatRenderer(smol_tokenizer, None)
    prompts = [[Message("user", "Who are you?")], [Message("user", "Name three colours of the rainbow, please.")]]
    model, _ = _load(smol_dir)
    plain = generate_answers(model, renderer, prompts, max_new_tokens=8)
    register_varlen_attention()
    model.set_attn_implementation(VARLEN)
    assert model.config._attn_implementation == VARLEN
    assert generate_answers(model, renderer, prompts, max_new_tokens=8) == plain


@pytest.mark.slow
def test_compiled_layers_give_the_same_losses(tmp_path):
    """train.compile=true (on by default on a GPU) changes kernels, not the math: same losses as eager."""
    runs = {}
    for compiled in (False, True):
        runs[compiled] = seektune.train({
            "data": {"datasets": [{"path": str(shared("identity/identity.json")), "max_records": 16}],
                     "max_length": 64, "holdout_prompts": 0},
            "lora": {"dropout": 0.0},
            "train": {"max_steps": 2, "per_device_batch_size": 4, "packing": True, "compile": compiled,
                      "save_steps": 100},
            "output": str(tmp_path / f"compiled-{compiled}"),
        })
    assert runs[True].info["fast_path"]["compile"] is True
    for a, b in zip(runs[False].step_metrics, runs[True].step_metrics):
        assert abs(a["loss"] - b["loss"]) < 1e-3, (a, b)
