"""The project's own exceptions: every error a user can cause is one of these."""
from __future__ import annotations


class AutocompressError(Exception):
    """Base class of errors a user can fix; the CLI prints the message alone and exits 2."""


class BudgetError(AutocompressError, ValueError):
    """A budget string that cannot be parsed, or a budget that cannot be met."""


class RecipeError(AutocompressError, ValueError):
    """A recipe file that is unreadable, invalid, or made for another model."""


class ModelError(AutocompressError):
    """A --model, --weights or --data option that cannot be loaded or used."""


class StudyError(AutocompressError):
    """An output folder holding a study that does not match the command."""


class SearchError(AutocompressError):
    """A search that cannot go on (its trials keep failing); what it finished is kept."""
