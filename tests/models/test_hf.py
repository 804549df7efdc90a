"""Hugging Face models as they are (small configs, random weights): heads and MLP units
pruned, sparsity/rank/bits on every Linear and Conv1D, costs as the space predicts."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from autocompress.compress import bake, compress
from autocompress.compress.conv1d import is_conv1d
from autocompress.evaluators import batches, measure_costs
from autocompress.spaces import build_space

MLP = ("intermediate.dense", "mlp.c_fc", "mlp.gate_proj", "mlp.fc1")


def _model(transformers, name: str):
    """(model, example input) for one of ``MODELS``."""
    torch.manual_seed(0)
    t = transformers
    ids = torch.randint(0, 100, (1, 8))
    text = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if name == "bert":
        return t.BertForSequenceClassification(t.BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)), text
    if name == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=32,
                                              bos_token_id=0, eos_token_id=0)), text
    if name in ("llama", "llama_mqa"):
        return t.LlamaForCausalLM(t.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2 if name == "llama" else 1, vocab_size=100)), text
    return t.ViTForImageClassification(t.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64)), {"pixel_values": torch.randn(1, 3, 32, 32)}


MODELS = ["bert", "gpt2", "llama", "llama_mqa", "vit"]


@pytest.mark.parametrize("name", MODELS)
def test_heads_and_mlp_units_are_groups_and_every_linear_has_weight_knobs(transformers, name):
    model, x = _model(transformers, name)
    space = build_space(model.eval(), x)  # GPT-2 included: no whole-model refusal
    heads = [g for g in space.groups if g.head_dim]
    assert len(heads) == 2 and all(g.head_dim == 8 for g in heads)
    assert all(space.layer(g.name).kind == "attention" for g in heads)
    # a channel of a grouped-query attention is a key/value head with its 2 query heads
    assert [g.heads_per_channel for g in heads] == ([2, 2] if name == "llama" else [1, 1])
    assert sum(any(g.name.endswith(m) for m in MLP) for g in space.groups) == 2
    knobs = set(space.knob_names)
    for layer_name, module in model.named_modules():
        if isinstance(module, nn.Linear) or is_conv1d(module):
            assert {f"{layer_name}/sparsity", f"{layer_name}/bits"} <= knobs, layer_name
    projections = [layer.name for layer in space.layers if layer.out_group in {g.name for g in heads}]
    assert projections and all(f"{p}/rank" in knobs for p in projections)
    assert space.cost(space.resolve(space.neutral())) == measure_costs(model, x)


@pytest.mark.parametrize("name", MODELS)
def test_pruned_heads_and_units_run_and_cost_what_the_space_predicts(transformers, name):
    model, x = _model(transformers, name)
    model.eval()
    space = build_space(model, x)
    candidate = {f"{g.name}/channels": 0.5 for g in space.groups
                 if g.head_dim or any(g.name.endswith(m) for m in MLP)}
    linear = [layer.name for layer in space.layers if layer.kind == "linear"]
    candidate.update({f"{linear[0]}/sparsity": 0.5, f"{linear[1]}/bits": 0.25, f"{linear[2]}/rank": 0.5})
    settings = space.resolve(candidate)
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)
    assert measure_costs(small, x)["flops"] < measure_costs(model, x)["flops"]
    with torch.no_grad():
        out = batches.logits(batches.call(bake(small), x))
        assert out.shape == batches.logits(batches.call(model, x)).shape and torch.isfinite(out).all()
    attention = small.get_submodule(next(g.name for g in space.groups if g.head_dim))
    if name == "bert":
        assert (attention.num_attention_heads, attention.all_head_size) == (2, 16)
    if name == "gpt2":
        assert (attention.num_heads, attention.split_size, attention.c_attn.out_features) == (2, 16, 48)
    if name == "llama":  # one key/value head kept, with both of its query heads
        assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.num_key_value_groups) \
            == (16, 8, 2)
    if name == "llama_mqa":  # the one key/value head stays, two query heads share it
        assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.num_key_value_groups) \
            == (16, 8, 2)


def test_gpt2_conv1d_masks_follow_its_inputs(transformers):
    """Conv1D stores (in, out): an N:M pattern runs along each output's inputs all the same."""
    model, x = _model(transformers, "gpt2")
    model.eval()
    space = build_space(model, x, sparsity_pattern="2:4")
    settings = space.resolve({"transformer.h.0.mlp.c_fc/sparsity": 0.5})
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)
    weight = bake(small).get_submodule("transformer.h.0.mlp.c_fc").weight  # an nn.Linear now: (out, in)
    assert weight.shape == (128, 32)
    assert (weight.view(128, -1, 4) != 0).sum(-1).max() <= 2


class _OddAttention(nn.Module):
    """Looks like Hugging Face attention, but its 30 query features are not whole 8-wide heads."""

    def __init__(self):
        super().__init__()
        self.head_dim = 8
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(16, 30), nn.Linear(16, 30), nn.Linear(16, 30)
        self.o_proj = nn.Linear(30, 16)

    def forward(self, x):
        weights = (self.q_proj(x) @ self.k_proj(x).transpose(-1, -2)).softmax(-1)
        return self.o_proj(weights @ self.v_proj(x))


def test_attention_it_cannot_prune_by_heads_is_excluded_with_a_warning_not_refused(caplog):
    model = nn.Sequential(_OddAttention(), nn.Linear(16, 3)).eval()
    with caplog.at_level("WARNING"):
        space = build_space(model, torch.randn(1, 5, 16))
    assert "not whole heads of 8 features" in space.excluded["0"] and "layer 0 left out" in caplog.text
    assert not any(g.head_dim for g in space.groups)
    assert not any(g.members[0].startswith(("0.q_proj", "0.k_proj")) for g in space.groups)  # not across heads
    assert {"0.q_proj/sparsity", "0.q_proj/rank", "0.q_proj/bits"} <= set(space.knob_names)


def test_pruning_the_residual_width_costs_what_the_space_predicts(transformers):
    """The hidden width runs through the embeddings: a pruned channel drops one column of
    each table (an entry per token), not one row."""
    model, x = _model(transformers, "bert")
    model.eval()
    space = build_space(model, x)
    embedded = [g for g in space.groups if not g.head_dim and not any(g.name.endswith(m) for m in MLP)]
    assert embedded, [g.name for g in space.groups]
    settings = space.resolve({f"{g.name}/channels": 0.5 for g in embedded})
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)
