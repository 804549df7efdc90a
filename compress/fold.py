"""BatchNorm folding for export: each BatchNorm2d that only normalises a Conv2d's output
is merged into that convolution's weight and bias, saving a pass over the activations."""
from __future__ import annotations

import copy
import logging

import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BatchNorm2d folded into the
    Conv2d before it and replaced by ``nn.Identity``; ``model`` itself is left untouched.

    A pair is foldable when ``torch.fx`` symbolic tracing shows the BatchNorm consuming
    the convolution's output and nothing else consuming it, each module is called once,
    neither is read as an attribute in ``forward``, the convolution carries no
    parametrization (bake it first) and the BatchNorm keeps running statistics.  The
    copy computes the same function as ``model`` in eval mode, up to float rounding.
    Never raises for a model fx cannot trace: that model comes back as an unfolded copy,
    with one warning saying why.
    """
    folded = copy.deepcopy(model).eval()
    try:
        graph = fx.symbolic_trace(folded).graph
    except Exception as error:  # fx raises many types (TraceError, TypeError...) for untraceable code
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("BatchNorm not folded: torch.fx cannot trace %s (%s)", type(model).__name__, reason)
        return folded
    for conv_name, bn_name in _foldable_pairs(folded, graph):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        folded.set_submodule(conv_name, fuse_conv_bn_eval(conv, bn))
        folded.set_submodule(bn_name, nn.Identity())
    return folded


def _foldable_pairs(model: nn.Module, graph: fx.Graph) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` of every pair ``fold_batchnorm`` may merge."""
    calls: dict[str, int] = {}
    read: set[str] = set()
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        elif node.op == "get_attr":
            read.add(node.target.rpartition(".")[0])
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        bn, conv = model.get_submodule(node.target), model.get_submodule(source.target)
        if (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d) and bn.running_mean is not None
                and not parametrize.is_parametrized(conv)
                and calls[node.target] == calls[source.target] == 1
                and not {node.target, source.target} & read):
            pairs.append((source.target, node.target))
    return pairs
