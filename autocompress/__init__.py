"""autocompress: AutoML compression search for PyTorch.

Budgets in (``flops=0.3``, ``params=50k``, ``size=1MB``), replayable per-layer recipes and
really smaller models out.  ``import autocompress as ac``; ``ac.search``, ``ac.apply``,
``ac.export_trial`` and ``ac.load_workload`` are the Python API (``autocompress.api``).

The strategies package is ``autocompress.search`` too: reach it with ``from
autocompress.search import ...``; the attribute ``ac.search`` is always the function.
"""
from __future__ import annotations

from . import compress as _compress  # noqa: F401  (registers the built-in compression kinds)
from . import search as _strategies  # noqa: F401  (loaded before the API, whose search() then keeps the name)
from .api import apply, export_trial, load_workload, search
from .core import __version__, budget
from .core.budget import Budget, BudgetTerm
from .core.errors import AutocompressError, BudgetError, ModelError, RecipeError, StudyError
from .core.recipe import Recipe
from .core.space import Candidate, ChannelGroup, Knob, LayerInfo, Space
from .core.trial import TrialRecord

__all__ = [
    "__version__", "budget", "Budget", "BudgetTerm", "Recipe", "Space", "Knob", "LayerInfo", "ChannelGroup",
    "Candidate", "TrialRecord", "AutocompressError", "BudgetError", "ModelError", "RecipeError", "StudyError",
    "search", "apply", "export_trial", "load_workload",
]
