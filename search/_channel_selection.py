"""Which channels to keep, group by group: the GA with the two-step fitness of the GA
pruning paper, run on the unpruned model with channel masks standing in for pruning.

Fitness 1 (cheap): the relative reconstruction error of the group's consumers (the next
layers) against the unpruned model on one small training batch.  Fitness 2: the best
few individuals re-ranked by the search's metric (accuracy by default) on a few validation
batches.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..compress.channel_masks import ChannelMasks
from ..core.space import Space
from ..core.workload import Workload
from ..evaluators import batches, evaluate
from ..evaluators.metrics import Metric, get_metric
from ._ga import GASettings, evolve

log = logging.getLogger(__name__)


class _Captured(Exception):
    """Raised by a capture hook once every watched layer ran: the rest of the forward pass
    cannot change the reconstruction error."""


def consumers(space: Space, group: str) -> list[str]:
    """The layers fed by ``group`` (its "next layers")."""
    return [layer.name for layer in space.layers if any(g == group for g, _ in layer.in_groups)]


class ChannelSelection:
    """The per-group GA on one workload; ``run`` decides every group in ``order``.

    ``batch_size`` samples of the first training batch are the reconstruction batch;
    the first ``minival_batches`` validation batches re-rank the ``rerank`` best
    individuals of each GA by ``metric``'s score (default accuracy).
    """

    def __init__(self, workload: Workload, space: Space, ga: GASettings, rerank: int = 3,
                 batch_size: int = 64, minival_batches: int = 1, metric: Metric | None = None):
        self.metric = get_metric(metric)
        self.model, self.space, self.ga, self.rerank = workload.model.eval(), space, ga, rerank
        self.batch = batches.first(batches.split(next(iter(workload.train)))[0], batch_size)
        self.minival = list(itertools.islice(workload.val, minival_batches))
        self.masks = ChannelMasks(self.model, space, workload.example_input)

    def run(self, targets: Mapping[str, int], order: Sequence[str], seed: Sequence[int]) -> dict[str, list[int]]:
        """``{group: kept channels (strongest first), then the dropped ones}`` for each
        group of ``order``, decided in that order with the earlier decisions applied;
        ``targets`` gives the channels to keep per group.  Deterministic for ``seed``."""
        channel_order = {}
        self.masks.reset()
        with torch.no_grad(), self.masks:
            watched = sorted({name for group in order for name in consumers(self.space, group)})
            reference = {**self._outputs(watched), **self._outputs([])}
            for step, group in enumerate(order):
                started = time.perf_counter()
                keep, error, magnitude_error, accuracy = self._decide(group, targets[group], reference,
                                                                      np.random.default_rng([*seed, step]))
                self.masks.set(group, keep)
                strength = self.masks.magnitude[group]
                ranked = sorted(range(len(keep)), key=lambda i: (not keep[i], -strength[i], i))
                channel_order[group] = ranked
                log.info("genetic: group %s (%d/%d) keeps %d of %d channels: reconstruction error %.4g "
                         "(magnitude choice %.4g)%s, %.1f s", group, step + 1, len(order), targets[group], len(keep),
                         error, magnitude_error, "" if accuracy is None else f", mini-val score {accuracy:.4g}",
                         time.perf_counter() - started)
        return channel_order

    def _decide(self, group: str, count: int, reference: dict[str, torch.Tensor], rng: np.random.Generator):
        size = self.masks.sizes[group]
        watched = consumers(self.space, group)

        def error(keep: np.ndarray) -> float:
            self.masks.set(group, keep)
            return self._error(watched, reference)

        strongest = np.zeros(size, dtype=bool)
        strongest[np.argsort(-self.masks.magnitude[group], kind="stable")[:count]] = True
        evaluated = evolve(size, count, error, rng, self.ga, seeds=[strongest])
        magnitude_error = next(e for e, individual in evaluated if np.array_equal(individual, strongest))
        best = (evaluated[0][1], evaluated[0][0], None)
        if self.rerank > 1 and len(evaluated) > 1:
            for value, keep in evaluated[: self.rerank]:
                self.masks.set(group, keep)
                accuracy = self._accuracy()
                if best[2] is None or accuracy > best[2]:
                    best = (keep, value, accuracy)
        self.masks.clear(group)
        return best[0], best[1], magnitude_error, best[2]

    def _outputs(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Outputs of the named layers (the model's output for the name ``""``) on the
        reconstruction batch, as the current masks leave them."""
        if not names:
            return {"": batches.logits(batches.call(self.model, self.batch))}
        captured: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def hook(module: nn.Module, inputs, output) -> None:
                captured.setdefault(name, output)
                if len(captured) == len(names):
                    raise _Captured

            return hook

        handles = [self.model.get_submodule(n).register_forward_hook(capture(n)) for n in names]
        try:
            batches.call(self.model, self.batch)
        except _Captured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured

    def _error(self, names: list[str], reference: dict[str, torch.Tensor]) -> float:
        """Mean over ``names`` of ``|out - ref|^2 / |ref|^2``, counted on the output
        channels that stay (the reference masked like the output)."""
        outputs = self._outputs(names)
        if not names:
            return float(((outputs[""] - reference[""]) ** 2).sum() / (reference[""] ** 2).sum().clamp_min(1e-12))
        total = 0.0
        for name in names:
            ref = self.masks.apply(self.model.get_submodule(name), reference[name])
            total += float(((outputs[name] - ref) ** 2).sum() / (ref**2).sum().clamp_min(1e-12))
        return total / len(names)

    def _accuracy(self) -> float:
        """The metric's score (higher is better) on the mini-validation batches."""
        return self.metric.score(evaluate(self.model, self.minival, self.metric)) if self.minival else 0.0
