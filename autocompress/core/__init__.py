"""The torch-free core: Budget, Space, Recipe, TrialRecord, the budget projection, weight
patterns and errors.  Nothing here imports torch or any other part of autocompress."""
from __future__ import annotations

__version__ = "0.1.0"
