"""Trials per minute: in-process against Ray Tune with 1 and 2 workers, on the demo.

The same search (strategy ``random``, the default per-trial proxy) runs ``--trials``
search trials in each mode on a fresh study; only the trial phase is timed (base
measurements and the final fine-tune are the same in every mode and left out).  The
in-process mode runs with one torch thread, like a Ray worker given one CPU.  Ray is
started once, before the timed runs (its start-up is reported on its own line).  The
per-trial overhead of the Ray path is (Ray, 1 worker) minus in-process, per trial.

    python benchmarks/ray_throughput.py [--trials 24] [--repeats 2] [--output ray_throughput.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from autocompress.core.budget import parse
from autocompress.core.trial import COMPLETE
from autocompress.engine.ray_tune import require_ray, run_ray_trials
from autocompress.engine.runner import prepare, run_trials
from autocompress.engine.settings import SearchSettings
from autocompress.engine.stopping import Stop
from autocompress.models.workload import load_workload


def timed_run(mode: str, workers: int, trials: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="autocompress-ray-bench-") as out:
        settings = SearchSettings(budget=parse("flops=0.3"), trials=trials, strategy="random", seed=seed,
                                  final_finetune_steps=0)
        search = prepare(load_workload(), settings, f"sqlite:///{Path(out) / 'study.db'}")
        start = time.perf_counter()
        if mode == "local":
            history = run_trials(search, Stop())
        else:
            history = run_ray_trials(search, Stop(), Path(out), workers=workers)
        seconds = time.perf_counter() - start
    complete = sum(r.state == COMPLETE for r in history)
    return {"mode": mode, "workers": workers, "seed": seed, "trials": complete, "seconds": seconds,
            "trials_per_minute": 60.0 * complete / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="search trials per run (default 24)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode, seeds 0.. (default 2)")
    parser.add_argument("--output", default="ray_throughput.json")
    args = parser.parse_args(argv)
    require_ray()
    import ray

    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    startup = time.perf_counter() - start
    print(f"ray.init (local, 2 CPUs): {startup:.1f} s", file=sys.stderr)
    modes = [("local", 1), ("ray", 1), ("ray", 2)]
    runs = []
    for seed in range(args.repeats):
        for mode, workers in modes:
            run = timed_run(mode, workers, args.trials, seed)
            runs.append(run)
            print(f"{mode} x{workers} seed={seed}: {run['trials']} trials in {run['seconds']:.1f} s "
                  f"({run['trials_per_minute']:.1f}/min)", file=sys.stderr, flush=True)
    ray.shutdown()
    rows = []
    for mode, workers in modes:
        rs = [r for r in runs if r["mode"] == mode and r["workers"] == workers]
        rows.append((mode, workers, statistics.mean(r["trials_per_minute"] for r in rs),
                     statistics.mean(r["seconds"] / r["trials"] for r in rs)))
    local = rows[0][3]
    print("| mode | workers | trials per minute | seconds per trial | overhead per trial vs in-process (s) |")
    print("|---|---:|---:|---:|---:|")
    for mode, workers, per_minute, per_trial in rows:
        overhead = f"{per_trial - local:+.2f}" if mode == "ray" and workers == 1 else ""
        print(f"| {mode} | {workers} | {per_minute:.1f} | {per_trial:.2f} | {overhead} |")
    print(f"\nRay start-up (ray.init, local): {startup:.1f} s; {args.trials} trials per run, mean of "
          f"{args.repeats} runs; load average before: {load:.2f}")
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump({"startup_seconds": startup, "runs": runs, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
