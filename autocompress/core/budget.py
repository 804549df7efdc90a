"""Budgets: what the compressed model must fit in, parsed from strings like ``flops=0.3``.

A budget term is ``metric=value`` where ``metric`` is one of ``flops``, ``params``,
``size`` or ``latency``.  A plain number in (0, 1] is a ratio of the base model; a number
with a unit is absolute (``flops=120M``, ``params=50k``, ``size=1.5MB``, ``latency=4ms``).
Latency terms name their target device after ``@`` (``latency=4ms@cpu``,
``latency=0.5@cpu``).  Several terms are separated by commas or given repeatedly.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BudgetError

METRICS = ("flops", "params", "size", "latency")

_COUNT_UNITS = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}
_SIZE_UNITS = {
    "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^@\s]+)\s*(?:@\s*(\S+))?\s*$")
_NUMBER = re.compile(r"^([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)([A-Za-z]*)$")
_EXAMPLES = "e.g. flops=0.3, flops=120M, params=50k, size=1.5MB or latency=4ms@cpu"


@dataclass(frozen=True)
class BudgetTerm:
    """One limit: ``metric`` at most ``value``.

    ``relative`` terms hold a ratio of the base model in (0, 1]; absolute terms hold
    FLOPs (count), params (count), size (bytes) or latency (milliseconds).
    ``target`` names the latency device and is None for the other metrics.
    """

    metric: str
    value: float
    relative: bool
    target: str | None = None
    text: str = ""

    @property
    def cost_name(self) -> str:
        """The name of the cost this term limits: the metric, or ``latency@<target>``."""
        return f"latency@{self.target}" if self.metric == "latency" else self.metric

    def limit(self, base: float) -> float:
        """The absolute limit for a base model whose metric is ``base``."""
        return self.value * base if self.relative else self.value

    def __str__(self) -> str:
        return self.text or _format(self)


def _format(term: BudgetTerm) -> str:
    if term.relative:
        value = repr(term.value)
    elif term.metric == "latency":
        value = f"{term.value!r}ms"
    elif term.metric == "size":
        value = f"{term.value!r}B"
    else:  # a count needs a unit, or it would read back as a ratio
        value = f"{term.value / 1e3!r}k"
    return f"{term.metric}={value}" + (f"@{term.target}" if term.target else "")


@dataclass(frozen=True)
class Budget:
    """A set of limits the compressed model must all meet (at most one per metric and target)."""

    terms: tuple[BudgetTerm, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(t.metric for t in self.terms)

    def to_strings(self) -> list[str]:
        return [str(t) for t in self.terms]

    def __str__(self) -> str:
        return ",".join(self.to_strings())


def parse(text: str | Iterable[str]) -> Budget:
    """Parse one budget string (comma-separated terms) or several; raise BudgetError if bad."""
    parts: list[str] = []
    if isinstance(text, str):
        texts = [text]
    else:
        texts = list(text)
    for chunk in texts:
        if not isinstance(chunk, str):
            raise BudgetError(f"budget {chunk!r} is not a string; use {_EXAMPLES}")
        parts.extend(p for p in chunk.split(",") if p.strip())
    if not parts:
        raise BudgetError(f"the budget is empty; use {_EXAMPLES}")
    terms = [parse_term(p) for p in parts]
    seen: set[tuple[str, str | None]] = set()
    for term in terms:
        key = (term.metric, term.target)
        if key in seen:
            raise BudgetError(f"budget names {term.metric} twice; give each metric once")
        seen.add(key)
    return Budget(tuple(terms))


def parse_term(text: str) -> BudgetTerm:
    """Parse one ``metric=value[@target]`` term; raise BudgetError naming what is wrong."""
    original = text.strip()
    match = _TERM.match(original)
    if not match:
        raise BudgetError(f"budget {original!r} is not of the form metric=value; use {_EXAMPLES}")
    metric, raw, target = match.group(1).lower(), match.group(2), match.group(3)
    if metric not in METRICS:
        raise BudgetError(
            f"budget {original!r} names unknown metric {metric!r}; use one of {', '.join(METRICS)}"
        )
    number = _NUMBER.match(raw)
    if not number:
        raise BudgetError(f"budget {original!r} has malformed value {raw!r}; use {_EXAMPLES}")
    value, unit = float(number.group(1)), number.group(2)
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"budget {original!r} must be positive; use {_EXAMPLES}")
    if metric == "latency":
        if not target:
            raise BudgetError(
                f"budget {original!r} names no target device; use e.g. latency=4ms@cpu or latency=0.5@cpu"
            )
    elif target:
        raise BudgetError(f"budget {original!r}: only latency takes a @target")
    if unit == "":
        if value > 1:
            hint = {"flops": "flops=0.3 or flops=120M", "params": "params=0.2 or params=50k",
                    "size": "size=0.25 or size=1.5MB", "latency": "latency=0.5@cpu or latency=4ms@cpu"}[metric]
            raise BudgetError(f"budget {original!r} is a ratio above 1; use e.g. {hint}")
        return BudgetTerm(metric, value, True, target, original)
    scaled = value * _unit_scale(metric, unit, original)
    if not math.isfinite(scaled) or scaled <= 0:
        raise BudgetError(f"budget {original!r} is out of range once its unit is applied; use {_EXAMPLES}")
    return BudgetTerm(metric, scaled, False, target, original)


def _unit_scale(metric: str, unit: str, original: str) -> float:
    if metric in ("flops", "params"):
        if unit in _COUNT_UNITS:
            return _COUNT_UNITS[unit]
        allowed = "k, M, G or T"
    elif metric == "size":
        if unit.lower() in _SIZE_UNITS:
            return _SIZE_UNITS[unit.lower()]
        allowed = "B, KB, MB, GB, KiB, MiB or GiB"
    else:
        if unit in _TIME_UNITS:
            return _TIME_UNITS[unit]
        allowed = "us, ms or s"
    raise BudgetError(f"budget {original!r} has unknown unit {unit!r} for {metric}; use {allowed}")
