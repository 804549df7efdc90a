"""The report of a search (``OUT/report.html`` and its pictures) and the tables the CLI prints."""
from __future__ import annotations

from .html import write_report

__all__ = ["write_report"]
