"""``autocompress report DIR``: one self-contained HTML page and PNGs of a search.

Pictures: proxy accuracy against FLOPs (and against each latency target) with every
trial, the accuracy/cost front, the base model and the chosen recipe marked; best
feasible accuracy so far against evaluations; per-layer bars of the chosen channels,
sparsity, rank and bits; the per-layer latency table of each latency target.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from ..core.budget import parse as parse_budget
from ..core.pareto import pareto_front
from ..core.recipe import Recipe
from ..core.trial import COMPLETE, FAILED, PRUNED, SCAN, TrialRecord
from ..engine.study import Study, study_location


class _Quality:
    """The quality axis of the pictures: the study's metric as its own value (a trial's
    score is negated where lower is better), or the raw score for a metric function
    this process cannot rebuild."""

    def __init__(self, spec: str):
        from ..evaluators.metrics import get_metric, is_builtin

        metric = get_metric(spec) if is_builtin(spec) else None
        self.value = metric.value if metric is not None else (lambda score: score)
        self.label = (f"proxy {metric.name}" + (" (%)" if metric.percent else "") if metric is not None
                      else f"proxy score of {spec}")


def _scatter(plt, history: list[TrialRecord], metric: str, base: float, best: int | None, path: Path,
             label: str, quality: _Quality, base_score: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    done = [r for r in history if r.state == COMPLETE and metric in r.metrics and r.score is not None]
    groups = (("scan trials (BN recalibration only)", [r for r in done if r.purpose == SCAN], "#bbbbbb", "x"),
              ("over the budget", [r for r in done if r.purpose != SCAN and not r.feasible], "#d62728", "o"),
              ("within the budget", [r for r in done if r.purpose != SCAN and r.feasible], "#1f77b4", "o"))
    for name, records, colour, marker in groups:
        if records:
            ax.scatter([r.metrics[metric] / base for r in records], [quality.value(r.score) for r in records], s=22,
                       c=colour,
                       marker=marker, label=name, alpha=0.8)
    front = [(r.metrics[metric] / base, quality.value(r.score)) for r in pareto_front(history, metric)]
    if front:
        ax.plot(*zip(*front), color="#1f77b4", lw=1, ls="--", label="front")
    chosen = [r for r in done if r.number == best]
    if chosen:
        ax.scatter([chosen[0].metrics[metric] / base], [quality.value(chosen[0].score)], s=160, marker="*", c="#ff7f0e",
                   edgecolors="k", zorder=5, label=f"chosen (trial {best})")
    if base_score is not None:
        ax.scatter([1.0], [quality.value(base_score)], s=90, marker="D", c="k", zorder=5, label="base model")
    else:
        ax.axvline(1.0, color="k", lw=0.8, ls=":", label="base model")
    ax.set_xlabel(f"{label} (of the base model)")
    ax.set_ylabel(quality.label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _progress(plt, history: list[TrialRecord], path: Path, quality: _Quality) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=110)
    best, xs, ys = None, [], []
    for i, r in enumerate(history, 1):
        if r.state == COMPLETE and r.purpose != SCAN and r.feasible and r.score is not None:
            best = r.score if best is None else max(best, r.score)
        if best is not None:
            xs.append(i)
            ys.append(quality.value(best))
    ax.step(xs, ys, where="post")
    ax.set_xlabel("evaluations (scans included)")
    ax.set_ylabel("best feasible " + quality.label)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _layers(plt, recipe: Recipe, sizes: dict[str, int], path: Path) -> None:
    names = list(recipe.layers)
    series = {
        "channels kept": [recipe.layers[n].get("out_channels", 0) / max(sizes.get(n, 1), 1) for n in names],
        "sparsity": [float(recipe.layers[n].get("sparsity", 0.0)) for n in names],
        "bits / 32": [recipe.layers[n].get("bits", 32) / 32 for n in names],
        "rank (of kept outputs)": [recipe.layers[n].get("rank", 0) / max(recipe.layers[n].get("out_channels", 1), 1)
                                   for n in names],
    }
    series = {k: v for k, v in series.items() if any(x not in (0.0, 1.0) for x in v) or k == "channels kept"}
    fig, axes = plt.subplots(len(series), 1, figsize=(7.2, 1.2 + 1.4 * len(series)), dpi=110, sharex=True,
                             squeeze=False)
    for ax, (title, values) in zip(axes[:, 0], series.items()):
        ax.bar(range(len(names)), values, color="#1f77b4")
        ax.set_ylabel(title, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xticks(range(len(names)))
    axes[-1, 0].set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(folder: str | Path, workload=None) -> Path:
    """Write ``folder/report.html`` and its PNGs from ``folder/study.db`` and
    ``folder/recipe.yaml``; returns the page's path.  ``workload`` (for the per-layer
    latency tables and layer sizes) is optional."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    study = Study.open(*study_location(folder))
    history, config = study.history(), study.config
    recipe = Recipe.load(folder / "recipe.yaml") if (folder / "recipe.yaml").is_file() else None
    base_metrics: dict[str, Any] = study.base or ((recipe.metrics or {}).get("base", {}) if recipe else {})
    base_score = base_metrics.get("proxy_accuracy")
    best = recipe.search.get("best_trial") if recipe else None
    pictures = []
    quality = _Quality(str(config.get("metric", "accuracy")))
    if base_metrics.get("flops"):
        _scatter(plt, history, "flops", base_metrics["flops"], best, folder / "accuracy_vs_flops.png", "FLOPs",
                 quality, base_score)
        pictures.append(("Proxy accuracy against FLOPs", "accuracy_vs_flops.png"))
    for key in [k for k in base_metrics if k.startswith("latency@")]:
        name = f"accuracy_vs_{key.replace('@', '_')}.png"
        _scatter(plt, history, key, base_metrics[key], best, folder / name, f"{key} (predicted)", quality,
                 base_score)
        pictures.append((f"Proxy accuracy against {key}", name))
    _progress(plt, history, folder / "best_so_far.png", quality)
    pictures.append(("Best feasible proxy accuracy against evaluations", "best_so_far.png"))
    tables = []
    if recipe is not None:
        sizes: dict[str, int] = {}
        if workload is not None:
            from ..spaces import build_space

            space = build_space(workload.model, workload.example_input)
            sizes = {layer.name: layer.out_channels for layer in space.layers}
            from ..core.ops import space_ops
            from ..latency_models import get_latency_model

            for term in parse_budget(recipe.budget).terms:
                if term.metric == "latency":
                    report = get_latency_model(term.target).predict(space_ops(space, recipe.layers))
                    tables.append((f"Per-layer latency on {term.target} (predicted, batch 1)", report.table()))
        _layers(plt, recipe, sizes, folder / "layers.png")
        pictures.append(("The chosen recipe, layer by layer", "layers.png"))
    page = _page(folder, config, history, recipe, pictures, tables)
    path = folder / "report.html"
    path.write_text(page)
    return path


def _page(folder: Path, config, history, recipe, pictures, tables) -> str:
    from .table import comparison

    done = sum(r.state == COMPLETE and r.purpose != SCAN for r in history)
    scans = sum(r.purpose == SCAN for r in history)
    failed = sum(r.state == FAILED for r in history)
    pruned = sum(r.state == PRUNED for r in history)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>autocompress report</title>",
             "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}</style></head><body>",
             f"<h1>autocompress search: {html.escape(str(config.get('budget', '')))}</h1>",
             f"<p>{html.escape(str(folder))}: strategy <b>{html.escape(str(config.get('strategy', '')))}</b>, "
             f"{done} search trials, {scans} scan trials, {failed} failed"
             + (f", {pruned} pruned" if pruned else "") + ".</p>"]
    if recipe is not None and recipe.metrics:
        parts.append("<h2>Base against compressed</h2><pre>"
                     + html.escape(comparison(recipe.metrics["base"], recipe.metrics["compressed"])) + "</pre>")
    for title, name in pictures:
        data = base64.b64encode((folder / name).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    for title, text in tables:
        parts.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre>")
    if recipe is not None:
        parts.append("<h2>Recipe</h2><pre>" + html.escape(recipe.to_yaml()) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
