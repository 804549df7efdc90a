"""Compression kinds: one registration per kind of compression (channels, sparsity, ...).

A ``Kind`` says everything the torch-free core needs to know about one kind of
compression: the knobs it adds to a space, how their values become recipe fields, how
those fields are validated and checked against a model, what they do to the ops (and so
the costs) of a layer, which budget metrics it lowers, and the ``Operator`` that really
applies it.  Kinds are registered once (``register_kind``); the built-in ones are
registered by ``autocompress.compress``, next to their operators.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ops import Op
    from .space import ChannelGroup, Knob, LayerInfo, Space


class Kind:
    """One kind of compression, as the search space, recipes and the cost model see it.

    Subclass it, set the class attributes and override what the kind needs; every method
    has a neutral default (no knobs, nothing resolved, nothing checked, ops unchanged).
    Kinds keep no state: the same calls give the same results.

    - ``name``: the knob kind (``Knob.kind``, ``--knobs``), e.g. ``"sparsity"``.
    - ``fields``: the recipe layer fields the kind owns, e.g. ``("sparsity", "pattern")``.
      A field belongs to one kind only.
    - ``metrics``: the budget metrics the kind is searched for by default (a budget on
      one of them turns its knobs when ``--knobs`` is not given).
    - ``operator``: the ``autocompress.compress.Operator`` that applies the kind's fields
      to a model; ``compress`` runs the registered kinds' operators in registration order.
    - ``knobs(layers, groups, **options)``: the knobs of a space, from the torch-free
      ``LayerInfo`` and ``ChannelGroup`` data of a model (in model order); ``options`` are
      ``build_space``'s keyword arguments (``sparsity_pattern``, ``conv_decomposition``):
      use those the kind needs, ignore the others.
    - ``resolve(space, candidate, settings)``: write the kind's fields into ``settings``
      (every layer of the space has an entry; the kinds registered before this one have
      written theirs) for the candidate's values of the kind's knobs.  Knob values are
      densities in (0, 1], 1 being neutral; a knob missing from the candidate is neutral.
      A neutral value writes nothing, or the field's neutral value.
    - ``validate_field(layer, field, value)``: raise ``RecipeError`` if ``value``, as
      loaded from a recipe's YAML, is not allowed for ``field`` (one of ``fields``), with
      one sentence naming the layer, the field, the allowed values and the bad value.
    - ``validate_layer(layer, settings)``: the same for combinations of fields in one
      layer's settings (e.g. a rank needs a decomposition).
    - ``check(space, layer, settings, shape)``: raise ``RecipeError`` for settings this
      model cannot take (e.g. a rank above what the pruned layer allows); ``settings``
      are the layer's, ``shape`` its ``(out_channels, in_channels)`` after channel pruning.
    - ``ops(layer, settings, ops)``: the ops (``core.ops.Op``) the layer runs with the
      kind's fields applied, given the ops the kinds before it gave (the first kind gets the
      layer at its shape after channel pruning): set ``sparsity``/``pattern`` or ``bits``,
      or replace an op by the ops of its factors.  ``Space.cost`` sums FLOPs, stored
      weights and bytes over these ops, so they must be exactly what the operator builds
      (``OperatorSuite`` checks it against the real model).
    """

    name: str = ""
    fields: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    operator: Any = None

    def knobs(self, layers: Sequence[LayerInfo], groups: Sequence[ChannelGroup], **options: Any) -> list[Knob]:
        return []

    def resolve(self, space: Space, candidate: Mapping[str, float], settings: dict[str, dict[str, Any]]) -> None:
        return None

    def validate_field(self, layer: str, field: str, value: Any) -> None:
        return None

    def validate_layer(self, layer: str, settings: Mapping[str, Any]) -> None:
        return None

    def check(self, space: Space, layer: LayerInfo, settings: Mapping[str, Any], shape: tuple[int, int]) -> None:
        return None

    def ops(self, layer: LayerInfo, settings: Mapping[str, Any], ops: list[Op]) -> list[Op]:
        return ops


def is_number(value: Any) -> bool:
    """Whether ``value`` (as loaded from YAML) is a finite int or float, not a bool."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def is_whole(value: Any, least: int = 1) -> bool:
    """Whether ``value`` (as loaded from YAML) is an int, not a bool, of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


_REGISTRY: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add ``kind`` after the kinds registered so far; returns it.  Raises ValueError if
    its name or one of its fields is already taken by another kind."""
    if not kind.name:
        raise ValueError(f"kind {type(kind).__name__} has no name")
    if kind.name in _REGISTRY:
        raise ValueError(f"a compression kind named {kind.name!r} is already registered")
    taken = {f: k.name for k in _REGISTRY.values() for f in k.fields}
    for f in kind.fields:
        if f in taken:
            raise ValueError(f"recipe field {f!r} of kind {kind.name!r} already belongs to kind {taken[f]!r}")
    _REGISTRY[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove the kind registered as ``name`` (KeyError if none is)."""
    del _REGISTRY[name]


def get_kind(name: str) -> Kind:
    """The kind registered as ``name``; KeyError naming the registered kinds if none is."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no compression kind {name!r}; registered: {', '.join(_REGISTRY)}") from None


def kinds() -> tuple[Kind, ...]:
    """The registered kinds, in registration order (the order knobs, resolution, costs and
    operators follow)."""
    return tuple(_REGISTRY.values())


def kind_names() -> tuple[str, ...]:
    """The names of the registered kinds, in order (what ``--knobs`` accepts)."""
    return tuple(_REGISTRY)


def kinds_for_metric(metric: str) -> tuple[str, ...]:
    """The names of the kinds searched by default for a budget on ``metric``."""
    return tuple(k.name for k in _REGISTRY.values() if metric in k.metrics)


def field_owners() -> dict[str, Kind]:
    """Every recipe layer field of the registered kinds, with the kind that owns it."""
    return {f: k for k in _REGISTRY.values() for f in k.fields}
