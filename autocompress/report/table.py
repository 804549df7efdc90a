"""Plain-text tables for the terminal."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

ROWS = (
    ("accuracy", "accuracy (%)"),
    ("flops", "FLOPs"),
    ("params", "params"),
    ("size", "size"),
    ("latency_cpu_ms", "CPU latency b=1 (ms)"),
)


def human(value: float, metric: str) -> str:
    """``5.35M``, ``112k``, ``448 kB``, ``99.72``."""
    if metric == "accuracy":
        return f"{value:.2f}"
    if metric.startswith("latency"):
        return f"{value:.3f}"
    units = (("G", 1e9), ("M", 1e6), ("k", 1e3))
    suffix = "B" if metric == "size" else ""
    for unit, scale in units:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}{suffix}".replace("kB", " kB").replace("MB", " MB").replace("GB", " GB")
    return f"{value:.0f}{' B' if suffix else ''}"


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def comparison(base: Mapping[str, float], compressed: Mapping[str, float], titles=("base", "compressed")) -> str:
    """Base against compressed, with the ratio (compressed / base) or the accuracy change;
    any other metric both hold (a search's ``--metric``: top5, perplexity...) with its
    change."""
    rows = []
    predicted = [(k, f"{k} (ms, predicted)") for k in base if k.startswith("latency@")]
    known = {key for key, _ in ROWS}
    scores = [(k, k) for k in base if k not in known and not k.startswith("latency")]
    for key, label in (*ROWS[:1], *scores, *ROWS[1:], *predicted):
        if key not in base or key not in compressed:
            continue
        b, c = float(base[key]), float(compressed[key])
        if key == "accuracy":
            change = f"{c - b:+.2f} pt"
        elif (key, label) in scores:
            change = f"{c - b:+.4g}"
            rows.append([label, f"{b:.4g}", f"{c:.4g}", change])
            continue
        else:
            change = f"{c / b:.3f}x" if b else "-"
        rows.append([label, human(b, key), human(c, key), change])
    return format_rows(["metric", *titles, "change"], rows)
