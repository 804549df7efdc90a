"""Is a saved latency model's whole-model total monotone in the channels kept?

Each operator's prediction is monotone by construction (``LatencyModelSuite`` checks it);
the learned model's between-the-layers term is not: its gathered elements (what an op reads
beyond what the op before it wrote) grow when the op before writes less.  This prunes each
channel group of the zoo models alone, from all its channels to 75%, 50% and 25%, and
counts the steps whose total (batch 1 and 32) is predicted slower than the step before.

    python benchmarks/latency_monotone.py MODEL.json   # e.g. DIR/learned-cpu.json of latency_models.py --keep DIR
"""
from __future__ import annotations

import argparse
import logging

from autocompress.core.ops import space_ops
from autocompress.latency_models import load_latency_model
from autocompress.models import zoo
from autocompress.spaces import build_space

MODELS = ("lenet5", "vgg_small", "resnet20", "mobilenetv2_small", "densenet_small", "se_net", "vit_tiny")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved latency model (.json)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the spaces' notes on layers left out of the search
    latency = load_latency_model(args.model)
    steps, slower, worst = 0, [], 0.0
    for name in MODELS:
        space = build_space(getattr(zoo, name)().eval(), zoo.example_input(name))
        for knob in (k for k in space.knobs if k.kind == "channels"):
            for batch in (1, 32):
                totals = [latency.total(space_ops(space, space.resolve({knob.name: d})), batch)
                          for d in (1.0, 0.75, 0.5, 0.25)]
                for before, after in zip(totals, totals[1:]):
                    steps += 1
                    if after > before:
                        slower.append(f"{name} {knob.name} batch {batch}: {before:.4f} -> {after:.4f} ms")
                        worst = max(worst, after / before - 1)
    print(f"{len(slower)} of {steps} pruning steps predicted slower (worst by {100 * worst:.3f}%)")
    for line in slower:
        print(" ", line)


if __name__ == "__main__":
    main()
