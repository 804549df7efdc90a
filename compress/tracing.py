"""Hugging Face models as the tracers (hooks, Torch-Pruning's dependency graph) see them."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn as nn

from .conv1d import linear_views


@contextmanager
def no_cache(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its Hugging Face key/value cache off (``config.use_cache``) while the
    block runs: a cache concatenates past keys to new ones, which Torch-Pruning's graph
    takes for a concatenation of channels.  Models without one are left as they are."""
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if isinstance(use_cache, bool):
        config.use_cache = False
    try:
        yield model
    finally:
        if isinstance(use_cache, bool):
            config.use_cache = use_cache


@contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its Conv1D layers seen as Linear (``conv1d.linear_views``) and no
    key/value cache (``no_cache``) while the block runs."""
    with linear_views(model), no_cache(model):
        yield model
