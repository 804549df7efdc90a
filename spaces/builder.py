"""Build a Space from a model by tracing it with Torch-Pruning's dependency graph.

The model becomes torch-free ``LayerInfo`` (every Conv2d, Linear (Hugging Face ``Conv1D``
too) and attention module) and ``ChannelGroup`` data (every group of coupled channels:
residual adds, concatenation, normalisation layers, depthwise convolutions; the heads of
every nn.MultiheadAttention and Hugging Face attention, ``attention``); every
registered compression kind (``core.kinds``) then gives its knobs on them: the built-in
ones a channel knob per group, and sparsity, rank and bit-width knobs per Conv2d and
Linear layer.  The model's output layer is never pruned on its outputs.  What is left out
is listed in ``Space.excluded`` with the reason, and logged once per model class and
process: a group the dependency graph cannot follow (``compress.channel_graph``) or whose
pruning breaks the forward pass, a layer that does not run as a module; where the graph
cannot trace the model at all, ``excluded["*"]``, and the space has no channel groups but
keeps every per-layer knob.  Grouped convolutions are pruned by equal channels in every
group (``ChannelGroup.blocks``).
"""
from __future__ import annotations

import logging
import math
from copy import deepcopy

import torch
import torch.nn as nn

from ..compress.channel_graph import Unfollowable, channel_graph
from ..compress.channels import dropped_channels
from ..compress.tracing import traceable
from ..core.errors import ModelError
from ..core.kinds import kinds
from ..core.patterns import DECOMPOSITIONS, parse_pattern
from ..core.space import ChannelGroup, LayerInfo, Space
from ..evaluators import batches
from ..evaluators.flops import flop_counter
from .attention import attention_layers, hf_attention

log = logging.getLogger(__name__)

_PRUNABLE = (nn.Conv2d, nn.Linear)
_UNSUPPORTED = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_warned: set[tuple[str, str, str]] = set()


def build_space(model: nn.Module, example_input: batches.Inputs, sparsity_pattern: str = "unstructured",
                conv_decomposition: str = "tucker2") -> Space:
    """Trace ``model`` on ``example_input`` and return its Space.

    ``sparsity_pattern`` is the pattern of every sparsity knob ("unstructured", N:M such
    as "2:4", or a block such as "4x4"); ``conv_decomposition`` is how rank knobs factorise
    kxk convolutions ("tucker2" or "spatial"; Linear and 1x1 layers always use "svd").
    Raises ModelError if the model cannot be run or traced on the example input, or an
    option is not one of those.
    """
    try:
        parse_pattern(sparsity_pattern)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if conv_decomposition not in DECOMPOSITIONS[1:]:
        raise ModelError(f"conv decomposition {conv_decomposition!r} is not 'tucker2' or 'spatial'")
    with traceable(model):  # Hugging Face: Conv1D layers seen as the Linear layers they are, no key/value cache
        return _build_space(model, example_input, sparsity_pattern, conv_decomposition)


def _build_space(model: nn.Module, example_input: batches.Inputs, sparsity_pattern: str,
                 conv_decomposition: str) -> Space:
    names = {module: name for name, module in model.named_modules()}
    order, shapes, calls, total_flops = _run_and_record(model, example_input)
    prunable = [m for m in order if isinstance(m, _PRUNABLE)]
    if not prunable:
        raise ModelError("the model has no Conv2d or Linear layer that runs on the example input; nothing to compress")
    output_layer = prunable[-1]
    excluded: dict[str, str] = {}
    for module in order:
        if isinstance(module, _UNSUPPORTED):
            excluded[names[module]] = f"{type(module).__name__} layers are not compressed yet"
            _warn(model, names[module], excluded[names[module]])
    attention = attention_layers(model, order, shapes, calls, names, excluded, _warn)
    hf = hf_attention(model, shapes, calls, names, excluded, _warn)
    for name, module in model.named_modules():
        if isinstance(module, _PRUNABLE) and module not in shapes and name not in excluded:
            excluded[name] = ("it does not run as a module on the example input (its weight is used directly, as in "
                              "torchvision's Swin attention, or not at all), so it is not compressed")
            _warn(model, name, excluded[name])

    # attention's query/key/value projections are no roots: their features are heads (``hf``), and
    # tracing from them through rotary embeddings takes Torch-Pruning minutes
    rank = {m: i for i, m in enumerate(model.modules())}
    parsed_groups = _channel_groups(model, example_input, names, rank, [output_layer, *hf.projections], excluded)

    groups: list[ChannelGroup] = []
    in_groups: dict[nn.Module, list[tuple[str, int]]] = {}
    out_group: dict[nn.Module, str] = {}
    for cgroup, consumers, reason in parsed_groups:
        if any(model.get_submodule(m) in hf.projections for m in cgroup.members):
            continue  # attention's query/key/value features: pruned by whole heads (``hf``) or not at all
        if reason:
            excluded[cgroup.name] = reason
            _warn(model, cgroup.name, reason, "channel search")
            continue
        groups.append(cgroup)
        for member in cgroup.members:
            out_group[model.get_submodule(member)] = cgroup.name
        for module, per_channel in consumers:
            in_groups.setdefault(module, []).append((cgroup.name, per_channel))
    groups += [group for _, group in attention.values()] + hf.groups
    for module, (group, per_channel) in hf.in_groups.items():
        in_groups.setdefault(module, []).append((group, per_channel))
    groups.sort(key=lambda g: rank[model.get_submodule(g.name)])

    layers, weighted = [], []
    for module in order:
        if module in attention:
            layers.append(attention[module][0])
        elif isinstance(module, _PRUNABLE):
            group, per_channel = hf.out_groups.get(module, (out_group.get(module), 1))
            weighted.append(_layer_info(module, names[module], shapes[module], tuple(in_groups.get(module, ())),
                                        group, per_channel))
            layers.append(weighted[-1])
        if module in hf.layers:
            layers.append(hf.layers[module])
    accounted = sum(_layer_params(w) for w in weighted) + sum(g.params_per_channel * g.size for g in groups)
    total = sum(p.numel() for p in model.parameters())
    layer_flops = sum(w.flops_per_pair * w.out_channels * (1 if w.depthwise else w.in_channels // w.groups)
                      for w in weighted) + sum(g.flops_per_channel * g.size for g in groups)
    knobs = [knob for kind in kinds() for knob in kind.knobs(layers, groups, sparsity_pattern=sparsity_pattern,
                                                              conv_decomposition=conv_decomposition)]
    return Space(tuple(layers), tuple(groups), tuple(knobs), total - accounted, total_flops - layer_flops, excluded)


def _warn(model: nn.Module, name: str, reason: str, what: str = "search") -> None:
    """Log that ``name`` is left out, once per model class, layer and reason in a process
    (a space is built more than once per run: for the search, then to check the recipe)."""
    key = (f"{type(model).__module__}.{type(model).__qualname__}", name, reason)
    if key not in _warned:
        _warned.add(key)
        log.warning("layer %s left out of the %s: %s", name, what, reason)


def _run_and_record(model: nn.Module, example_input: batches.Inputs):
    """Modules in the order they first run, their (input, output) shapes (an attention's:
    (query, key)), how often each attention runs, and the total FLOPs."""
    order: list[nn.Module] = []
    shapes: dict[nn.Module, tuple[torch.Size, torch.Size]] = {}
    calls: dict[nn.Module, int] = {}

    def hook(module, inputs, output):
        calls[module] = calls.get(module, 0) + 1
        if module not in shapes and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            order.append(module)
            shapes[module] = (inputs[0].shape, output.shape)

    def attention_hook(module, args, kwargs, output):
        query, key = (list(args) + [kwargs.get("query"), kwargs.get("key")][len(args):])[:2]
        if module not in calls:
            order.append(module)
            shapes[module] = (query.shape, key.shape)
        calls[module] = calls.get(module, 0) + 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    handles += [m.register_forward_hook(attention_hook, with_kwargs=True) for m in model.modules()
                if isinstance(m, nn.MultiheadAttention)]
    # autograd on, as in evaluators.count_flops, so fused inference kernels are counted
    x = batches.for_grad(example_input)
    try:
        with torch.enable_grad(), flop_counter() as counter:
            batches.call(model.eval(), x)
    except Exception as exc:
        raise ModelError(
            f"the model failed on an example input of shape {batches.describe(example_input)}: {exc}"
        ) from None
    finally:
        for h in handles:
            h.remove()
    return order, shapes, calls, int(counter.get_total_flops())


def _is_out(handler) -> bool:
    return "out_channels" in getattr(handler, "__name__", str(handler))


def _channel_groups(model: nn.Module, example_input: batches.Inputs, names, rank, ignored: list[nn.Module],
                    excluded: dict[str, str]) -> list[tuple[ChannelGroup, list[tuple[nn.Module, int]], str]]:
    """``(ChannelGroup, [(consumer, in scale)], reason to exclude or '')`` of every group of
    coupled channels whose root (a Conv2d or Linear layer not in ``ignored``) Torch-Pruning
    can follow; a root it cannot gets a one-member group with the reason.  Where the model
    cannot be traced at all: none, with ``excluded["*"]`` saying why (warned once)."""
    try:
        graph = channel_graph(model, example_input)
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises many types while tracing exotic graphs
        reason = (f"the dependency graph could not trace the model ({type(exc).__name__}: {exc}); no channels are "
                  "searched, per-layer sparsity, rank and bits are")
        excluded["*"] = reason
        _warn(model, "*", reason, "channel search")
        return []
    parsed, visited, troubled = [], set(), set()
    for module in list(graph.module2node):
        if not isinstance(module, _PRUNABLE) or module in ignored or module in visited or module not in names:
            continue
        try:
            group = graph.group(module)
        except Unfollowable as exc:
            parsed.append((ChannelGroup(names[module], module.weight.shape[0], (names[module],)), [], str(exc)))
            troubled.add(module)
            continue
        outputs = {item.dep.target.module for item in group if _is_out(item.dep.handler)}
        visited |= outputs
        if any(m in outputs for m in ignored):
            continue
        result = _parse_group(group, names, rank)
        if result is not None:
            cgroup, consumers, reason = result
            problem = graph.problem(group)
            if problem:
                troubled |= outputs
            parsed.append((cgroup, consumers, reason or problem))
    # a layer whose outputs the graph cannot follow (attention's query/key/value projection) may tie its
    # input width to them in code (a reshape by the input's width): pruning its input is tried on a copy first
    suspects = [g for g, consumers, reason in parsed if not reason and any(m in troubled for m, _ in consumers)]
    failed = _breaking(model, example_input, suspects) if suspects else {}
    return [(g, consumers, reason or failed.get(g.name, "")) for g, consumers, reason in parsed]


def _breaking(model: nn.Module, example_input: batches.Inputs, groups: list[ChannelGroup]) -> dict[str, str]:
    """The groups (name -> why) whose pruning breaks the model's forward pass: pruned, one
    block of channels each, on a copy, all together and then, where that fails, by halves."""
    def error(subset: list[ChannelGroup]) -> str:
        copy = deepcopy(model).eval()
        try:
            graph = channel_graph(copy, example_input)
            for g in subset:
                drop = dropped_channels(g.size, g.size - g.blocks, g.blocks, scores=torch.zeros(g.size))
                graph.group(copy.get_submodule(g.name), drop).prune()
            with torch.no_grad():
                batches.call(copy, example_input)
        except Exception as exc:  # noqa: BLE001 - whatever the model's own code raises on pruned widths
            return f"{type(exc).__name__}: {exc}".splitlines()[0]
        return ""

    def search(subset: list[ChannelGroup], why: str) -> dict[str, str]:
        if not why:
            return {}
        if len(subset) == 1:
            return {subset[0].name: f"pruning its channels breaks the model's forward pass ({why}); the model's "
                                    "code ties another width to them (e.g. an attention reshaping by its input width)"}
        half = len(subset) // 2
        return search(subset[:half], error(subset[:half])) | search(subset[half:], error(subset[half:]))

    return search(groups, error(groups))


def _parse_group(group, names, rank):
    """(ChannelGroup, [(consumer, in scale)], reason to exclude or '') or None if irrelevant."""
    members, consumers, extra, seen = [], [], 0, set()
    size = len(group[0].idxs)
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        key = (id(module), _is_out(handler))
        if key in seen:
            continue
        seen.add(key)
        if isinstance(module, nn.Parameter):  # a parameter used directly (ConvNeXt's layer_scale)
            if _is_out(handler):
                extra += module.numel() // module.shape[item.dep.target.pruning_dim] * (len(item.idxs) // size)
            continue
        if module not in names:
            continue
        if isinstance(module, _PRUNABLE):
            if _is_out(handler):
                members.append((module, len(item.idxs)))
            else:
                per_channel, rest = divmod(len(item.idxs), size)
                consumers.append((module, per_channel if not rest else 0))
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            # a channel is a column of the table: one entry per token
            extra += module.num_embeddings * (len(item.idxs) // size)
        elif _is_out(handler):
            # normalisation-like layers: parameters indexed by channel in their first dimension
            per_index = sum(p[0].numel() for p in module.parameters(recurse=False) if p.dim() >= 1)
            extra += per_index * (len(item.idxs) // size)
    if not members:
        return None
    members.sort(key=lambda m: rank[m[0]])
    name = names[members[0][0]]
    reason, blocks = "", 1
    attention = [names[item.dep.target.module] for item in group
                 if isinstance(item.dep.target.module, nn.MultiheadAttention)]
    if attention:
        reason = (f"its channels are the width of the attention {attention[0]}, which nn.MultiheadAttention ties "
                  "to its projections; attention is pruned by heads instead")
    for module, _ in members:
        width = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        if width != size:
            reason = (f"the dependency graph couples {names[module]} ({width} channels) with {size}-channel "
                      "layers; it could not resolve this graph (e.g. a concatenation feeding a flatten)")
    fed = [(m, m.out_channels, count == size) for m, count in members if isinstance(m, nn.Conv2d)]
    fed += [(m, m.in_channels, per_channel == 1) for m, per_channel in consumers if isinstance(m, nn.Conv2d)]
    for module, width, direct in fed:
        if module.groups > 1 and not module.groups == module.in_channels == module.out_channels:
            if width != size or not direct:
                reason = (f"grouped convolution {names[module]} (groups={module.groups}) meets these channels "
                          "through a concatenation or reshape; it is channel-pruned only when fed directly")
            blocks = math.lcm(blocks, module.groups)
    if not reason and size // blocks < 2:
        reason = (f"its grouped convolutions (groups={blocks} together) leave one channel per group, so no channel "
                  "can go from every group alike")
    if any(per_channel == 0 for _, per_channel in consumers):
        reason = "a consumer's input width is not a multiple of the group's channels"
    cgroup = ChannelGroup(name, size, tuple(names[m] for m, _ in members), extra, blocks=blocks)
    return cgroup, consumers, reason


def _layer_info(module, name, shape, in_groups, out_group, out_per_channel: int = 1) -> LayerInfo:
    in_shape, out_shape = shape
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        batch = in_shape[0] if len(in_shape) == 4 else 1
        (h_in, w_in), (h_out, w_out) = in_shape[-2:], out_shape[-2:]
        rows = (batch * h_in * w_in, batch * h_out * w_in, batch * h_out * w_out)
        padding = module.padding if isinstance(module.padding, tuple) else (0, 0)  # "valid"; "same" is rare
        if module.padding == "same":
            padding = ((module.dilation[0] * (kh - 1)) // 2, (module.dilation[1] * (kw - 1)) // 2)
        geometry = (h_in, w_in, *module.stride, *padding, *module.dilation)
        return LayerInfo(name, "conv", module.in_channels, module.out_channels, module.groups, (kh, kw),
                         2 * kh * kw * rows[2], module.bias is not None, out_group, in_groups, rows, geometry)
    n = in_shape.numel() // module.in_features
    return LayerInfo(name, "linear", module.in_features, module.out_features, 1, (1, 1), 2 * n,
                     module.bias is not None, out_group, in_groups, (n, n, n), out_per_channel=out_per_channel)


def _layer_params(layer: LayerInfo) -> int:
    per_group = 1 if layer.depthwise else layer.in_channels // layer.groups
    kh, kw = layer.kernel
    return layer.out_channels * per_group * kh * kw + (layer.out_channels if layer.bias else 0)
