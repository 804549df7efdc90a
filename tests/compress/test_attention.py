from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from autocompress.compress import HeadPrunedAttention, bake, compress, head_scores
from autocompress.evaluators import measure_costs
from autocompress.models import zoo
from autocompress.spaces import build_space


def _attention(batch_first: bool, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    return nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()


def _masked(attention: nn.MultiheadAttention, dropped: list[int]) -> nn.MultiheadAttention:
    """A copy whose ``dropped`` heads contribute nothing: their out_proj columns are zero."""
    masked = _attention(attention.batch_first)
    masked.load_state_dict(attention.state_dict())
    d = attention.head_dim
    with torch.no_grad():
        for h in dropped:
            masked.out_proj.weight[:, h * d:(h + 1) * d] = 0
    return masked


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_pruning_heads_gives_what_masking_them_gives(batch_first, need_weights, cross):
    attention = _attention(batch_first)
    pruned = HeadPrunedAttention.from_multihead(attention, [0, 2])
    masked = _masked(attention, [1, 3])
    shape = (2, 5, 32) if batch_first else (5, 2, 32)
    query = torch.randn(shape)
    key = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    key, value = (key, key + 1) if cross else (query, query)
    padding = torch.zeros(2, key.shape[1 if batch_first else 0], dtype=torch.bool)
    padding[1, -2:] = True
    with torch.no_grad():
        got, got_weights = pruned(query, key, value, key_padding_mask=padding, need_weights=need_weights)
        want, want_weights = masked(query, key, value, key_padding_mask=padding, need_weights=need_weights)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert pruned.num_heads == 2 and pruned.embed_dim == 32 and pruned.out_proj.in_features == 16
    if need_weights:  # averaged over the kept heads only
        assert got_weights.shape == want_weights.shape
        assert torch.allclose(got_weights.sum(-1), torch.ones(()))


def test_a_per_head_mask_follows_the_kept_heads():
    attention = _attention(True)
    pruned = HeadPrunedAttention.from_multihead(attention, [3, 1])
    x = torch.randn(2, 5, 32)
    mask = torch.zeros(2 * 4, 5, 5, dtype=torch.bool)
    mask.view(2, 4, 5, 5)[:, 1, :, -1] = True  # head 1 may not see the last position
    with torch.no_grad():
        got = pruned(x, x, x, attn_mask=mask, need_weights=False)[0]
        want = _masked(attention, [0, 2])(x, x, x, attn_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert pruned.kept_heads == (1, 3)


def test_head_pruning_keeps_the_strongest_heads_and_the_costs_the_space_predicts():
    model, x = zoo.vit_tiny(), zoo.example_input("vit_tiny")
    space = build_space(model, x)
    settings = space.resolve({"blocks.0.attn/channels": 0.5, "blocks.1.attn/channels": 0.25})
    assert (settings["blocks.0.attn"]["heads"], settings["blocks.1.attn"]["heads"]) == (2, 1)
    small = compress(model, space, settings, x)
    pruned = small.blocks[0].attn
    assert isinstance(pruned, HeadPrunedAttention) and isinstance(model.blocks[0].attn, nn.MultiheadAttention)
    scores = head_scores(model.blocks[0].attn)
    assert min(scores[list(pruned.kept_heads)]) >= max(s for i, s in enumerate(scores) if i not in pruned.kept_heads)
    assert space.cost(settings) == measure_costs(small, x)
    assert measure_costs(small, x)["flops"] < measure_costs(model, x)["flops"]
    batch = zoo.example_input("vit_tiny", batch=2)
    with torch.no_grad():
        assert bake(small)(batch).shape == (2, 10)


def test_pruned_attention_state_dict_round_trips():
    attention = _attention(False)
    pruned = HeadPrunedAttention.from_multihead(attention, [2])
    again = HeadPrunedAttention(32, 8, (2,), 4)
    again.load_state_dict(pruned.state_dict())
    x = torch.randn(5, 2, 32)
    with torch.no_grad():
        assert torch.equal(again(x, x, x)[0], pruned(x, x, x)[0])
    assert set(pruned.state_dict()) == set(attention.state_dict())


def test_multihead_attention_projections_take_sparsity_and_bits_as_the_space_costs_them():
    model, x = zoo.vit_tiny(), zoo.example_input("vit_tiny")
    space = build_space(model, x)
    assert {"blocks.0.attn/sparsity", "blocks.0.attn/bits"} <= set(space.knob_names)
    assert "blocks.0.attn/rank" not in space.knob_names  # nn.MultiheadAttention multiplies whole matrices
    for candidate in ({"blocks.0.attn/sparsity": 0.5, "blocks.1.attn/bits": 0.25},
                      {"blocks.0.attn/sparsity": 0.5, "blocks.0.attn/bits": 0.25, "blocks.0.attn/channels": 0.5}):
        settings = space.resolve(candidate)
        small = compress(model, space, settings, x)
        assert space.cost(settings) == measure_costs(small, x)
        assert space.cost(settings)["params"] < space.cost(space.resolve(space.neutral()))["params"]
        with torch.no_grad():
            assert bake(small)(x).shape == (1, 10)
    attention = bake(small).blocks[0].attn
    assert isinstance(attention, HeadPrunedAttention)
    assert (attention.in_proj_weight == 0).float().mean() == 0.5 and (attention.out_proj.weight == 0).any()


def test_torchvision_vit_attention_gets_sparsity_and_bits_on_its_projections(torchvision):
    torch.manual_seed(0)
    model = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight)  # zero at init: stored entries would be counted as absent
    x = torch.randn(1, 3, 32, 32)
    space = build_space(model, x)
    attention = [layer.name for layer in space.layers if layer.kind == "attention"]
    assert len(attention) == 2
    for name in attention:
        assert {f"{name}/channels", f"{name}/sparsity", f"{name}/bits"} <= set(space.knob_names)
    settings = space.resolve({f"{attention[0]}/sparsity": 0.5, f"{attention[1]}/bits": 0.25,
                              f"{attention[1]}/channels": 0.5, "encoder.layers.encoder_layer_0.mlp.0/rank": 0.5})
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)
    with torch.no_grad():
        assert bake(small)(x).shape == (1, 10)
