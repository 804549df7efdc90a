"""A search and a worker sharing one study on one machine: wall time by OpenMP setting.

Runs ``autocompress search --storage ... --trials 10 --strategy random`` alone, then the
same search with one ``autocompress worker`` beside it, under: OpenMP's spinning waits
(``OMP_WAIT_POLICY=ACTIVE``), passive waits (``OMP_WAIT_POLICY=PASSIVE``), and one
thread per process (``OMP_NUM_THREADS=1``, what the README advises
on a machine with as many cores as processes).  Prints the wall time until both ended.

    python benchmarks/shared_study_cores.py
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "search alone (defaults)": ({}, False),
    "search + worker, spinning waits (OMP_WAIT_POLICY=ACTIVE)": ({"OMP_WAIT_POLICY": "ACTIVE"}, True),
    "search + worker, passive waits (OMP_WAIT_POLICY=PASSIVE)": ({"OMP_WAIT_POLICY": "PASSIVE"}, True),
    "search + worker, one thread each (OMP_NUM_THREADS=1)": ({"OMP_NUM_THREADS": "1"}, True),
}


def run(folder: Path, env_extra: dict, with_worker: bool, trials: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_extra)
    common = ["--storage", f"sqlite:///{folder / 'shared.db'}", "--study", "s", "--no-progress"]
    start = time.perf_counter()
    search = subprocess.Popen([sys.executable, "-m", "autocompress", "search", "--trials", str(trials), "--out",
                               str(folder / "run"), "--strategy", "random", "--final-finetune-steps", "20", *common],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    worker = (subprocess.Popen([sys.executable, "-m", "autocompress", "worker", *common], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) if with_worker else None)
    for process in (search, worker):
        if process and process.wait() != 0:
            raise SystemExit(f"failed: {process.args}\n{process.stderr.read()}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.trials} trials\n\n| setting | wall s |\n|---|---:|")
    for name, (env, with_worker) in SETTINGS.items():
        with tempfile.TemporaryDirectory() as folder:
            print(f"| {name} | {run(Path(folder), env, with_worker, args.trials):.1f} |", flush=True)


if __name__ == "__main__":
    main()
