"""autocompress: AutoML compression search for PyTorch.

Budgets in (``flops=0.3``, ``params=50k``, ``size=1MB``), replayable per-layer recipes and
really smaller models out.  ``import autocompress as ac``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import budget
from .budget import Budget, BudgetTerm
from .errors import AutocompressError, BudgetError, ModelError, RecipeError, StudyError
from .recipe import Recipe
from .space import Candidate, ChannelGroup, Knob, LayerInfo, Space
from .trial import TrialRecord

__all__ = [
    "__version__", "budget", "Budget", "BudgetTerm", "Recipe", "Space", "Knob", "LayerInfo", "ChannelGroup",
    "Candidate", "TrialRecord", "AutocompressError", "BudgetError", "ModelError", "RecipeError", "StudyError",
    "search", "apply", "export_trial", "load_workload",
]


def __getattr__(name: str):
    # The torch-heavy front door is imported on first use, so the core types stay light.
    if name in ("search", "apply", "export_trial", "load_workload"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")
