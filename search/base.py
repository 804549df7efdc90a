"""The Strategy base class, the Problem a strategy works on, and what it proposes."""
from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.space import Candidate, Space
from ..core.trial import SCAN, SEARCH, TrialRecord, best_feasible, cheapest_feasible

if TYPE_CHECKING:  # torch-free import of the types
    from ..core.workload import Workload


@dataclass
class Proposal:
    """What a strategy asks the engine to evaluate.

    ``values``: ``{knob name: density}`` for every knob of the space (missing knobs are
    neutral).  ``purpose``: ``"search"`` trials are projected onto the budget, fine-tuned
    as the proxy says and compete for the recipe; ``"scan"`` trials (sensitivity scans)
    are evaluated as given, with BatchNorm recalibration only, and never become the
    recipe.  ``channel_order``: ``{group name: channel indices, most wanted first}`` for
    strategies that choose *which* channels survive (default: by L2 magnitude).
    ``initial_state``: weights the trial starts from instead of the base model's, for
    strategies that train them (haloc): a state dict of the workload's model (names to
    tensors, all entries or some), which the engine compresses and fine-tunes in place of
    the base weights (the teacher stays the base model).  It lives in memory: only a trial
    evaluated in the process that asked for it uses it (not Ray workers, not a trial
    evaluated again on resume, not the recipe's final fine-tune), and the study does not
    store it.  ``preference``: ``{knob name: weight >= 0}``, how much the strategy wants
    to keep each knob where the budget repair must move knobs (``core.projection``: a
    higher weight is lowered later and grown sooner; knobs left out get the mean of the
    others); empty: the engine uses the sensitivities of the study's scans, else equal
    weights.  It is not stored: a trial evaluated again reuses its stored candidate.
    """

    values: dict[str, float]
    purpose: str = SEARCH
    channel_order: dict[str, list[int]] = field(default_factory=dict)
    initial_state: Any = None
    preference: dict[str, float] = field(default_factory=dict)


@dataclass
class Problem:
    """Everything a strategy may read: the space, the budget's limits (absolute, per
    metric), the base model's costs, its proxy accuracy on the validation split, the
    accuracy drop the user tolerates (in points) and the objective (``"accuracy"``: the
    best proxy accuracy within the budget; ``"pareto"``: the whole accuracy/cost front;
    ``"cost"``: the least primary cost within the budget whose proxy accuracy is at least
    ``accuracy_floor``).
    ``workload`` (model and data) is there for strategies that look inside the model
    (genetic, haloc); ``recovery`` holds the proxy's settings (calibration batches,
    fine-tune steps, lr, temperature); both are None in torch-free tests.  ``metric`` is
    the search's quality metric (``evaluators.metrics.Metric``; None: accuracy), for
    strategies that score models themselves.  All but the first three are keyword-only.
    """

    space: Space
    limits: Mapping[str, float]
    base: Mapping[str, float]
    _: KW_ONLY
    base_score: float = 100.0
    max_accuracy_drop: float = 1.0
    objective: str = "accuracy"
    workload: Workload | None = None
    recovery: Mapping[str, Any] = field(default_factory=dict)
    metric: Any = None

    @property
    def primary_metric(self) -> str:
        """The budget metric to minimise when cost is an objective (the first one)."""
        return next(iter(self.limits), "flops")

    @property
    def accuracy_floor(self) -> float:
        """The least proxy accuracy the user accepts, in points: ``base_score - max_accuracy_drop``."""
        return self.base_score - self.max_accuracy_drop

    def primary_cost(self, record: TrialRecord) -> float:
        """A trial's cost on the primary metric: as measured, else as the space predicts it."""
        metric = self.primary_metric
        if metric in record.metrics:
            return float(record.metrics[metric])
        return float(self.space.candidate_cost(record.candidate)[metric])


class Strategy(ABC):
    """Proposes the next trial from the problem and the trials so far (ask/tell).

    Contract: ``ask(problem, history)`` returns a Proposal (or a plain ``{knob: value}``
    dict, read as a search proposal) with every value inside its knob's ``[low, high]``,
    or None when the strategy has nothing new to try.  A strategy keeps no hidden
    state: everything it needs is in ``history`` (complete, failed and running trials,
    oldest first, scans included) and in its constructor arguments, so a resumed or
    distributed study asks exactly as an uninterrupted one would.  ``tell`` is called
    with each finished record for strategies that want to log or cache; it must not be
    needed for correctness.  Search proposals need not meet the budget: the engine
    repairs each onto the budget before it is evaluated (``core.projection``: step by
    step, by the proposal's ``preference``), and under the accuracy objective grows one
    that fits into the budget's headroom.  ``best`` picks the trial
    that becomes the recipe.  Constructor arguments are keyword arguments with defaults,
    each stored as an attribute of the same name (scikit-learn's convention), so
    ``get_params`` gives them back and ``type(s)(**s.get_params())`` rebuilds the strategy:
    that is how a search stores its strategy (name and parameters, as JSON).
    """

    name: str = ""
    default_trials: int = 30
    """Search trials when the user names none (fewer for strategies whose every trial is a
    search of its own: haloc, genetic)."""
    knob_kinds: tuple[str, ...] = ()
    """The knob kinds the strategy can turn, when not every kind (haloc: ``("rank",)``):
    without ``--knobs`` the search space holds these, not the budget's default kinds."""
    keeps_feasible: bool = False
    """True for strategies that ask for settings inside the budget on purpose (condensa
    chooses how far under the budget to go): the engine then evaluates a proposal that
    already meets the budget as it is, instead of growing it to the budget's edge."""
    objectives: tuple[str, ...] = ("accuracy", "pareto")
    """The objectives (``Problem.objective``) the strategy serves; a search with another
    one is refused before it starts."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments as this strategy was built with them (read
        from the attributes of the same names).  Raises TypeError for a constructor argument
        the strategy does not keep as an attribute (override ``get_params`` then)."""
        params = {}
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if not hasattr(self, name):
                raise TypeError(f"strategy {type(self).__name__} does not keep its constructor argument {name!r} "
                                f"as self.{name}; store it so, or override get_params")
            params[name] = getattr(self, name)
        return params

    @abstractmethod
    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Proposal | Candidate | None:
        """The next Proposal (or ``{knob: value}``), or None when there is nothing new to try."""

    def tell(self, problem: Problem, record: TrialRecord) -> None:  # noqa: B027  (optional hook)
        """Called with every finished (complete, failed or pruned) trial; nothing by default."""

    def best(self, problem: Problem, history: Sequence[TrialRecord]) -> TrialRecord | None:
        """The trial that becomes the recipe, among feasible search trials: under the
        ``"cost"`` objective the cheapest (``Problem.primary_cost``) whose proxy accuracy
        is at least ``problem.accuracy_floor`` (ties: the higher score), else, and when
        none reaches the floor, the best proxy accuracy (ties: the earliest)."""
        if problem.objective == "cost":
            cheapest = cheapest_feasible(history, problem.accuracy_floor, problem.primary_cost)
            if cheapest is not None:
                return cheapest
        return best_feasible(history)


def as_proposal(answer: Proposal | Mapping[str, float] | None, space: Space) -> Proposal | None:
    """Normalise an ``ask`` answer; raise ValueError for values outside the space or a
    preference for an unknown knob or not a finite number >= 0."""
    if answer is None:
        return None
    proposal = answer if isinstance(answer, Proposal) else Proposal(dict(answer))
    if proposal.purpose not in (SEARCH, SCAN):
        raise ValueError(f"proposal purpose {proposal.purpose!r} is not {SEARCH!r} or {SCAN!r}")
    knobs = {k.name: k for k in space.knobs}
    values = {}
    for name, knob in knobs.items():
        value = float(proposal.values.get(name, knob.high))
        if not knob.low - 1e-9 <= value <= knob.high + 1e-9:
            raise ValueError(f"proposal {name}={value} is outside [{knob.low}, {knob.high}]")
        values[name] = min(knob.high, max(knob.low, value))
    unknown = set(proposal.values) - set(knobs)
    if unknown:
        raise ValueError(f"proposal names knobs the space does not have: {', '.join(sorted(unknown))}")
    preference = {}
    for name, weight in proposal.preference.items():
        if name not in knobs:
            raise ValueError(f"proposal preference names a knob the space does not have: {name}")
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight < math.inf):
            raise ValueError(f"proposal preference {name}={weight!r} is not a finite number >= 0")
        preference[name] = float(weight)
    return Proposal(values, proposal.purpose, {g: [int(i) for i in o] for g, o in proposal.channel_order.items()},
                    initial_state=proposal.initial_state, preference=preference)
