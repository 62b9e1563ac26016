"""Graphed checkpointing pads packed rows to buckets and passes tensors between layers through fixed buffers; it must
learn exactly what torch's checkpointing learns. On a CPU the graphs are replayed eagerly on the same buffers
(layer_graphs._EagerReplay), which runs all of the padding and buffer logic; the CUDA graphs themselves are checked
on a GPU."""

from __future__ import annotations

import pytest
import torch

from seektune.training.layer_graphs import bucket_boundaries, bucket_length, graph_layers, graph_stats
from seektune.training.lora_fused import fuse_lora_linears, fuse_lora_mlps
from seektune.training.speed import compile_layers

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread

ATTN = "seektune_test_segments"


def _segment_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal attention within each packed sample, from cu_seq_lens_q (what the varlen kernel gets on a GPU)."""
    cu = kwargs["cu_seq_lens_q"].tolist()
    out = torch.zeros(*query.shape[:3], value.shape[-1], dtype=query.dtype)
    for a, b in zip(cu, cu[1:]):
        if b > a:  # padded boundaries end in empty samples
            out[:, :, a:b] = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling)
    return out.transpose(1, 2), None


def _register_attention():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    from seektune.training.speed import _varlen_mask

    AttentionInterface.register(ATTN, _segment_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN, _varlen_mask)


def _tiny_moe(device="cpu", dtype=torch.float32):
    """A 3-layer DeepSeek-V2 with MLA and routed + shared experts (layer 0 dense), LoRA on attention and MLPs."""
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    from seektune.adapters.lora import attach_lora
    from seektune.config import LoraSection

    _register_attention()
    torch.manual_seed(0)
    cfg = DeepseekV2Config(vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                           n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16,
                           q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                           max_position_embeddings=256, topk_method="greedy", n_group=1, topk_group=1,
                           use_cache=False, attn_implementation=ATTN if device == "cpu" else "sdpa")
    with torch.device(device):
        model = DeepseekV2ForCausalLM(cfg).to(dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    if device == "cuda":  # what training uses on a GPU: the varlen kernel, grouped expert matmuls
        from seektune.training.speed import VARLEN, register_varlen_attention

        register_varlen_attention()
        model.set_attn_implementation(VARLEN)
        model.set_experts_implementation("grouped_mm")
    targets = ["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = attach_lora(model, LoraSection(r=4, alpha=8, dropout=0.0, targets=targets)).train()
    fuse_lora_linears(model)  # the one-node LoRA forwards of the fast path
    fuse_lora_mlps(model)
    return model


def _packed(lengths, seed, device="cpu"):
    from seektune.training.speed import packed_collator

    g = torch.Generator().manual_seed(seed)
    features = []
    for n in lengths:
        ids = torch.randint(0, 128, (n,), generator=g).tolist()
        features.append({"input_ids": ids, "labels": ids})
    batch = packed_collator()(features)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


STEPS = [[30, 20], [17, 9, 22], [30, 20], [5, 40, 3, 11, 7], [100, 60]]


def _train(model, steps=STEPS, device="cpu"):
    """Loss and LoRA gradients per step, with an SGD step between (the graphs must read the updated weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    out = []
    for i, lengths in enumerate(steps):
        batch = _packed(lengths, seed=i, device=device)
        # as the Trainer does: the token count reaches every layer's kwargs, and changes every step
        loss = model(**batch, num_items_in_batch=int((batch["labels"] != -100).sum())).loss
        loss.backward()
        out.append((loss.detach().clone(), [p.grad.clone() for p in params]))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return out


def _assert_same(ref, got, atol):
    for (loss_a, grads_a), (loss_b, grads_b) in zip(ref, got, strict=True):
        torch.testing.assert_close(loss_b, loss_a, atol=atol, rtol=0)
        assert len(grads_a) == len(grads_b) > 0
        for a, b in zip(grads_a, grads_b):
            torch.testing.assert_close(b, a, atol=atol, rtol=atol)


def test_graphed_layers_learn_what_torch_checkpointing_learns():
    reference = _train(_tiny_moe())
    model = _tiny_moe()
    assert graph_layers(model) == 3
    got = _train(model)
    _assert_same(reference, got, atol=1e-5)
    stats = graph_stats(model)
    # (tokens, samples + pad sample) buckets: 50/2 and 48/3 -> (128, 4), 66/5 -> (128, 8), 160/2 -> (160, 4):
    # one capture per layer and bucket, the repeated ones replayed
    assert stats["captures"] == 3 * 3 and not stats["failed"]
    assert stats["tokens"] == sum(map(sum, STEPS)) and stats["pad_tokens"] == 4 * 128 + 160 - stats["tokens"]


def test_gradients_of_two_micro_batches_add_up():
    """The node hands autograd its gradient buffers, which the next replay overwrites: autograd must add them into
    .grad, never adopt them."""
    grads = []
    for graphed in (False, True):
        model = _tiny_moe()
        if graphed:
            graph_layers(model)
        for i, lengths in enumerate(STEPS[:2]):
            model(**_packed(lengths, seed=i)).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_a_trainer_run_with_graphed_layers_ends_at_the_same_weights(tmp_path):
    """transformers' Trainer as `seektune train` drives it (packed collator, the token count passed to the model,
    gradient clipping, a scheduler): the same LoRA weights after four steps with and without graphs."""
    from transformers import Trainer, TrainingArguments

    from seektune.training.speed import packed_collator

    g = torch.Generator().manual_seed(7)
    rows = [torch.randint(0, 128, (n,), generator=g).tolist() for n in (30, 20, 17, 9, 22, 40, 3, 11, 7, 25, 12, 33)]
    data = [{"input_ids": ids, "labels": ids} for ids in rows]
    finals = []
    for graphed in (False, True):
        model = _tiny_moe()
        if graphed:
            graph_layers(model)
        args = TrainingArguments(output_dir=str(tmp_path / str(graphed)), per_device_train_batch_size=3, max_steps=4,
                                 learning_rate=1e-2, max_grad_norm=1.0, lr_scheduler_type="linear", use_cpu=True,
                                 report_to="none", save_strategy="no", logging_steps=1, seed=0, data_seed=0,
                                 remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=data, data_collator=packed_collator()).train()
        finals.append([p.detach().clone() for p in model.parameters() if p.requires_grad])
    assert graph_stats(model)["captures"] > 0 and not graph_stats(model)["failed"]
    for a, b in zip(*finals, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_graphed_layers_pass_rows_between_layers_without_copies():
    """Layer i's output is a view of layer i+1's input buffer: only the first layer copies its row in."""
    model = _tiny_moe()
    graph_layers(model)
    layers = model.base_model.model.model.layers
    seen = []
    for layer in layers:
        layer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
            (args[0] if args else kwargs["hidden_states"]).data_ptr()), with_kwargs=True)
    model(**_packed([30, 20], seed=0)).loss.backward()
    book = layers[0]._seektune_checkpointing.book
    assert seen[1:] == [book.x[1].data_ptr(), book.x[2].data_ptr()]
    assert seen[0] != book.x[0].data_ptr()


def _second_forward_before_backward(device="cpu"):
    model = _tiny_moe(device, torch.bfloat16 if device == "cuda" else torch.float32)
    graph_layers(model)
    first = model(**_packed([30, 20], seed=0, device=device)).loss
    model(**_packed([30, 20], seed=1, device=device)).loss.backward()
    first.backward()


def test_a_bucket_whose_capture_fails_runs_under_torch_checkpointing(monkeypatch):
    """Layer 1 cannot be captured for the last step's bucket: layer 0 runs that step as a graph, the others under
    torch's checkpointing, with a warning; the gradients stay right."""
    from seektune.training.layer_graphs import GraphedLayer, _CaptureFailed

    real = GraphedLayer._capture

    def capture(self, key, static):
        if self.index == 1 and key[0] == 160:
            raise _CaptureFailed("no graph for this bucket")
        return real(self, key, static)

    monkeypatch.setattr(GraphedLayer, "_capture", capture)
    reference = _train(_tiny_moe())
    model = _tiny_moe()
    graph_layers(model)
    with pytest.warns(UserWarning, match="no graph for this bucket"):
        got = _train(model)
    _assert_same(reference, got, atol=1e-5)
    stats = graph_stats(model)
    assert stats["failed"] == ["no graph for this bucket"] and stats["captures"] == 3 * 2 + 1


def test_a_second_forward_before_backward_is_refused():
    # On a CPU the replay's copies bump the buffers' version counters and autograd itself refuses; a CUDA graph
    # writes behind autograd's back and the layers' own check refuses (the GPU test below).
    with pytest.raises(RuntimeError, match="second forward pass ran before|modified inplace"):
        _second_forward_before_backward()


def test_padded_batches_and_evaluation_run_without_graphs():
    model = _tiny_moe()
    model.config._attn_implementation = "sdpa"
    graph_layers(model)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()  # torch's checkpointing, no graph
    assert graph_stats(model)["captures"] == 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        assert model.eval()(input_ids=ids, attention_mask=mask).logits.shape == (2, 12, 128)


@pytest.mark.parametrize("tokens", [1, 127, 128, 129, 1000, 1025, 1900, 2048, 2049, 5000, 70000])
def test_buckets_cover_the_row_with_at_most_an_eighth_of_padding(tokens):
    padded = bucket_length(tokens)
    assert padded >= tokens and padded % 16 == 0
    assert padded == 128 if tokens <= 128 else padded - tokens <= tokens / 8
    assert bucket_length(padded) == padded  # a bucket is its own bucket
    assert [bucket_boundaries(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 4, 8, 16]


def test_compiled_graphed_layers_learn_what_torch_checkpointing_learns():
    steps = STEPS[:2]
    reference = _train(_tiny_moe(), steps)
    model = _tiny_moe()
    graph_layers(model)
    assert compile_layers(model) == 3  # what the graphed layers run is compiled, inside their autograd nodes
    _assert_same(reference, _train(model, steps), atol=1e-4)
    assert graph_stats(model)["captures"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graphed_layers_learn_what_torch_checkpointing_learns(compiled):
    runs = []
    for graphed in (False, True):
        model = _tiny_moe("cuda", torch.bfloat16)
        if graphed:
            graph_layers(model)
            if compiled:
                compile_layers(model)
        runs.append(_train(model, device="cuda"))
    _assert_same(runs[0], runs[1], atol=2e-2)
    stats = graph_stats(model)
    assert not stats["failed"] and stats["captures"] == 3 * 3, stats
    with pytest.raises(RuntimeError, match="second forward pass ran before"):
        _second_forward_before_backward("cuda")
