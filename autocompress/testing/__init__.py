"""Reusable test suites for extension points (in the manner of ``optuna.testing``).

``StrategySuite``: subclass it and provide a ``strategy_factory`` fixture returning a
callable ``seed -> Strategy``; every test below then checks that strategy on the demo
model (a real space and workload, synthetic scores so it runs in seconds).

``OperatorSuite``: subclass it in a pytest module, set ``kind`` (your compression kind,
``core.kinds.Kind``, or a registered kind's name) and ``space_options`` (``build_space``
keyword arguments), and provide a ``model_and_input`` fixture returning ``(model,
example_input)``; every test then runs for your kind's operator on that model.

``RecoverySuite``: subclass it and set ``name`` (a registered recovery regime) and
``params``; every test then checks that regime on the demo model.
"""
from __future__ import annotations

from .latency import LatencyModelSuite
from .operators import OperatorSuite
from .recovery import RecoverySuite
from .strategies import StrategySuite

__all__ = ["OperatorSuite", "StrategySuite", "LatencyModelSuite", "RecoverySuite"]
