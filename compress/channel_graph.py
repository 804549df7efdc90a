"""Torch-Pruning's dependency graph, with a way out where it cannot follow the channels.

Torch-Pruning works out how channel indices map through concatenations, splits and
reshapes.  Where it cannot, its ``build_dependency`` raises (a channel shuffle's reshapes:
``integer division or modulo by zero``), or the indices it follows multiply until a group
takes minutes (through attention's reshapes and matrix products).  ``channel_graph``
builds the graph anyway: a node whose index mapping fails is recorded in ``unresolved``
(and maps indices as they are, so every group through it must be left out), and a
group whose indices outgrow the model's largest activation raises ``Unfollowable``.
``problem(group)`` says why a group cannot be pruned, or ''.  One group is left out,
never the model.
"""
from __future__ import annotations

import traceback
import warnings

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning import _helpers
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.dependency import Dependency
from torch_pruning.dependency.group import Group
from torch_pruning.ops import OPTYPE

from ..evaluators import batches
from .tracing import no_cache

_INDEX_MAPPINGS = {
    OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
    OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
    OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
    OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
    OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}
"""What ``torch_pruning.dependency.index_mapping.update_index_mapping`` runs per node type."""

_PRODUCTS = ("BmmBackward", "MmBackward", "AddmmBackward", "BaddbmmBackward", "MatmulBackward")
"""Matrix products outside Linear modules (attention's ``q @ k^T``, a functional ``F.linear``):
Torch-Pruning takes them for element-wise ops, which keep channels; they do not."""


class Unfollowable(Exception):
    """A group's channel indices cannot be followed (see the module docstring)."""


def prune_out(module: nn.Module):
    """Torch-Pruning's function that prunes the outputs of a Conv2d or Linear ``module``."""
    return tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels


class ChannelGraph(tp.DependencyGraph):
    """``tp.DependencyGraph`` that records the nodes it cannot map (``unresolved``: node ->
    the error) and caps the indices a group may carry (``limit``).  Build it with
    ``channel_graph``."""

    def __init__(self) -> None:
        super().__init__()
        self.unresolved: dict = {}
        self.limit = 0
        self.most_items = 0

    def group(self, module: nn.Module, idxs: list[int] | None = None) -> Group:
        """The group that prunes the output channels ``idxs`` (all of them by default) of
        the Conv2d or Linear ``module``; raises Unfollowable as ``get_pruning_group`` does."""
        width = module.weight.shape[0]
        return self.get_pruning_group(module, prune_out(module), list(range(width)) if idxs is None else idxs)

    def problem(self, group: Group) -> str:
        """Why ``group`` cannot be pruned (its channels pass a node the graph could not map,
        or a matrix product of activations), or ''."""
        for item in group:
            for node in (item.dep.source, item.dep.target):
                if node in self.unresolved:
                    return ("the dependency graph cannot map its channels through a reshape (as in a channel "
                            f"shuffle): {self.unresolved[node]}")
                if not isinstance(node.module, nn.Module) or node.type != OPTYPE.ELEMENTWISE:
                    continue
                grad_fn = type(node.grad_fn).__name__ if node.grad_fn is not None else ""
                inside_linear = node.outputs and all(isinstance(out.module, nn.Linear) for out in node.outputs)
                if grad_fn.startswith(_PRODUCTS) and not inside_linear:  # a Linear on 3-d inputs: view, addmm, view
                    return ("its channels meet a matrix product outside a Linear layer (e.g. attention's "
                            "query-key product), which channel pruning does not follow")
        return ""

    def _describe(self, node) -> str:
        """A node as users know it: the module's name, else the op (``_Reshape_46()``)."""
        return self._module2name.get(node.module) or str(node.module)

    def update_index_mapping(self) -> None:
        """Torch-Pruning's ``update_index_mapping``, node by node: a node whose mapping
        fails goes into ``unresolved`` and keeps the identity mapping."""
        for node in self.module2node.values():
            update = _INDEX_MAPPINGS.get(node.type)
            if update is None or node in self.unresolved:
                continue
            try:
                update(self, node)
            except Exception as exc:  # noqa: BLE001 - Torch-Pruning's shape inference raises many types
                self.unresolved[node] = f"{type(exc).__name__}: {exc}"

    def get_pruning_group(self, module: nn.Module, pruning_fn, idxs) -> Group:
        """``tp.DependencyGraph.get_pruning_group`` (Torch-Pruning 1.6), with the index
        mappings updated by ``update_index_mapping`` and Unfollowable raised where a
        dependency carries more than ``limit`` indices or an index mapping fails."""
        if module not in self.module2node:
            raise ValueError(f"Module {module} is not in the dependency graph.")
        if isinstance(module, nn.Conv2d) and module.groups == module.out_channels and module.out_channels > 1:
            pruning_fn = tp.prune_depthwise_conv_out_channels
        hybrid = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
        self.update_index_mapping()
        group = Group()
        root = self.module2node[module]
        group.add_dep(dep=Dependency(pruning_fn, pruning_fn, source=root, target=root), idxs=hybrid)
        visited, stack = set(), [(group[0].dep, hybrid)]
        while stack:
            dep, indices = stack.pop(-1)
            node, fn = dep.target, dep.handler
            visited.add(node)
            for new_dep in node.dependencies:
                if not new_dep.is_triggered_by(fn):
                    continue
                new_indices = indices
                try:
                    for mapping in new_dep.index_mapping:
                        if mapping is not None:
                            new_indices = mapping(new_indices)
                except Exception as exc:  # noqa: BLE001 - a mapping from a shape Torch-Pruning misread
                    raise Unfollowable(f"the dependency graph cannot map its channels through the reshapes on the "
                                       f"way to {self._describe(new_dep.target)} (as in a channel shuffle): "
                                       f"{type(exc).__name__}: {exc}") from None
                if not new_indices:
                    continue
                if self.limit and len(new_indices) > self.limit:
                    raise Unfollowable(f"its channel indices multiply past {self.limit} at "
                                       f"{self._describe(new_dep.target)}: the dependency graph cannot follow these "
                                       "reshapes (as in a channel shuffle or an attention)")
                if new_dep.target in visited and group.has_pruning_op(new_dep, new_indices):
                    continue
                if len(group) > self.most_items:
                    raise Unfollowable(f"its dependencies do not settle: past {self.most_items} pruning steps at "
                                       f"{self._describe(new_dep.target)}, which the dependency graph cannot follow")
                group.add_dep(new_dep, new_indices)
                stack.append((new_dep, new_indices))
        merged = Group()
        for dep, indices in group.items:
            if isinstance(dep.target.module, nn.Parameter) and any(dep.target.module is p for p in self.ignored_params):
                continue
            merged.add_and_merge(dep, indices)
        merged._DG = self
        for i in range(len(merged)):
            hybrid_idxs = merged[i].idxs
            merged[i] = _helpers.GroupItem(merged[i].dep, _helpers.to_plain_idxs(hybrid_idxs))
            merged[i].root_idxs = _helpers.to_root_idxs(hybrid_idxs)
        return merged


def channel_graph(model: nn.Module, example_input: batches.Inputs) -> ChannelGraph:
    """The dependency graph of ``model`` on ``example_input`` (its logits are the output
    traced; a Hugging Face key/value cache is off while tracing, ``tracing.no_cache``).
    Raises what Torch-Pruning raises where the model cannot be traced at all."""
    graph, largest = ChannelGraph(), [0]

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with warnings.catch_warnings(), torch.enable_grad(), no_cache(model):  # Torch-Pruning traces with autograd
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            warnings.filterwarnings("ignore", message="Maximum recursive depth")
            graph.build_dependency(model, example_inputs=example_input, output_transform=batches.logits,
                                   verbose=False)
    except Exception as exc:
        if not any(frame.name == "update_index_mapping" for frame in traceback.extract_tb(exc.__traceback__)):
            raise
        graph.update_index_mapping()  # traced; only some index mappings failed
    finally:
        for handle in handles:
            handle.remove()
    # a flatten maps a channel to its positions: no index can exceed the largest activation
    graph.limit = 2 * max(largest[0], 4096)
    # a group prunes each dependency about once (a few times where concatenations split its indices)
    graph.most_items = 4 * sum(len(node.dependencies) for node in graph.module2node.values()) + 16
    return graph
