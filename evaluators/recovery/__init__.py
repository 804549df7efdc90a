"""Recovery regimes: how a compressed model's weights are trained back (``Recovery``),
by name as a recipe's ``recovery.method`` gives it."""
from __future__ import annotations

import inspect

from ...core.errors import AutocompressError
from ._admm import ADMM
from ._distill import Distill
from ._hoyer import GroupHoyer, Hoyer
from ._hspg import HSPG
from ._lc import LC
from ._slr import SLR
from .base import Constraint, Projection, Recovery, TrainingRun

RECOVERIES: dict[str, type[Recovery]] = {
    Distill.name: Distill,
    Hoyer.name: Hoyer,
    GroupHoyer.name: GroupHoyer,
    HSPG.name: HSPG,
    ADMM.name: ADMM,
    SLR.name: SLR,
    LC.name: LC,
}


def recovery_names() -> list[str]:
    return list(RECOVERIES)


def get_recovery(name: str, **params) -> Recovery:
    """The regime registered as ``name``, built with ``params``.  AutocompressError naming
    the registered regimes for an unknown name, and the regime's options for one it does
    not take or a value it refuses."""
    if name not in RECOVERIES:
        raise AutocompressError(f"unknown recovery regime {name!r}; use one of {', '.join(RECOVERIES)}")
    cls = RECOVERIES[name]
    known = list(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise AutocompressError(f"recovery regime {name!r} has no option {unknown[0]!r}; its options are: "
                                f"{', '.join(known) or 'none'}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise AutocompressError(f"recovery regime {name!r}: {exc}") from None


__all__ = ["Recovery", "Constraint", "Projection", "TrainingRun", "RECOVERIES", "get_recovery", "recovery_names",
           "Distill", "Hoyer", "GroupHoyer", "HSPG", "ADMM", "SLR", "LC"]
