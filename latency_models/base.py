"""The LatencyModel base class: per-op and whole-model latency predictions in milliseconds."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.ops import Op

SCHEMA = 1


@dataclass
class LatencyReport:
    """A prediction: one row per op (``layer``, ``kind``, ``m``/``n``/``k``/``groups``,
    ``bits``, ``ms``) and their total, at ``batch``."""

    target: str
    batch: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return float(sum(r["ms"] for r in self.rows))

    def table(self) -> str:
        """The per-layer table as text."""
        head = f"{'layer':<28} {'kind':<9} {'m':>7} {'n':>6} {'k':>6} {'groups':>6} {'bits':>4} {'ms':>10}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['layer']:<28} {r['kind']:<9} {r['m']:>7} {r['n']:>6} {r['k']:>6} {r['groups']:>6} "
                         f"{r['bits']:>4} {r['ms']:>10.4f}")
        lines.append(f"{'total (' + self.target + f', batch {self.batch})':<72} {self.total_ms:>10.4f}")
        return "\n".join(lines)


class LatencyModel(ABC):
    """Predicts the latency of ops on one target.

    Contract (``autocompress.testing.LatencyModelSuite``): ``predict_op`` is never
    negative; more work never predicts faster within one op kind (more ``m``, ``n``,
    ``k`` or batch); ``to_dict``/``from_dict`` round-trip to the same predictions, as
    JSON (never pickle), with a schema version.
    """

    kind: str = ""

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def predict_op(self, op: Op, batch: int = 1) -> float:
        """Milliseconds for ``op`` at ``batch`` samples."""

    def predict(self, ops: Iterable[Op], batch: int = 1) -> LatencyReport:
        report = LatencyReport(self.name, batch)
        for op in ops:
            report.rows.append({"layer": op.layer, "kind": op.kind, "m": op.m, "n": op.n, "k": op.k,
                                "groups": op.groups, "bits": op.bits, "ms": float(self.predict_op(op, batch))})
        return report

    def total(self, ops: Iterable[Op], batch: int = 1) -> float:
        return float(sum(self.predict_op(op, batch) for op in ops))

    # ----- serialisation ----------------------------------------------------------------
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The fields that define this model (JSON-able)."""

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": self.kind, "name": self.name, "params": self.params()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))
