"""Time of the analytic cost model (``Space.candidate_cost``), which the budget projection
calls about 50 times per proposal: ms per candidate on zoo models, the fastest of 5 passes
over 200 random candidates.  Runs against whatever autocompress is installed, so two
versions can be compared (issue 13: before and after costs were computed from the kinds' ops).

    python benchmarks/space_cost.py
"""
from __future__ import annotations

import random
import time

try:
    from autocompress.models import zoo
except ImportError:  # before the package was split by role
    from autocompress import zoo
from autocompress.spaces import build_space

for name in ("resnet20", "mobilenetv2_small", "vit_tiny"):
    space = build_space(getattr(zoo, name)().eval(), zoo.example_input(name))
    rng = random.Random(0)
    candidates = [{k.name: rng.uniform(k.low, 1.0) for k in space.knobs} for _ in range(200)]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for candidate in candidates:
            space.candidate_cost(candidate)
        best = min(best, (time.perf_counter() - start) / len(candidates))
    print(f"| {name} | {len(space.knobs)} | {best * 1e3:.3f} |")
