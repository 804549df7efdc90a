"""The accuracy/cost front of a search's trials (``--objective pareto``, the report's pictures)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from .trial import TrialRecord, feasible_trials


def pareto_front(history: Sequence[TrialRecord], metric: str) -> list[TrialRecord]:
    """Feasible search trials no other one beats on both proxy accuracy and ``metric``, by ``metric``."""
    points = [r for r in feasible_trials(history) if metric in r.metrics]
    front = [r for r in points if not any(
        o.score >= r.score and o.metrics[metric] <= r.metrics[metric]
        and (o.score > r.score or o.metrics[metric] < r.metrics[metric]) for o in points)]
    return sorted(front, key=lambda r: r.metrics[metric])


def save_front(history: Sequence[TrialRecord], metric: str, base: Mapping[str, float], path: Path) -> None:
    """Write the accuracy/``metric`` front as YAML (``pareto.yaml``), with each point's
    ratio to the ``base`` model's; ``autocompress export`` turns any of its trials into a recipe."""
    front = [{"trial": r.number, "proxy_accuracy": r.score, metric: r.metrics[metric],
              f"{metric}_ratio": r.metrics[metric] / base[metric],
              **{m: v for m, v in r.metrics.items() if m != metric}} for r in pareto_front(history, metric)]
    path.write_text(yaml.safe_dump({"objective": ["proxy_accuracy", metric], "base": dict(base), "front": front},
                                   sort_keys=False))
