"""The ``autocompress`` command line: search, apply, show."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from ..core import __version__

EXIT_USAGE, EXIT_NO_RESULT = 2, 1


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (the built-in demo when --model is absent)")
    group.add_argument("--model", metavar="PKG.MODULE:ATTR",
                       help="an nn.Module, or a function returning a trained one; hf:DIR for a Hugging Face model "
                            "saved with save_pretrained (loaded from DIR alone)")
    group.add_argument("--weights", metavar="FILE", help="a state dict for the model (loaded with weights_only=True)")
    group.add_argument("--data", metavar="PKG.MODULE:ATTR",
                       help="a function returning (train, val[, test]) iterables of (x, y) batches or of dicts "
                            "with 'labels' (Hugging Face style)")


def _run_options(parser: argparse.ArgumentParser, metric: str) -> None:
    group = parser.add_argument_group("where models run and how they are scored")
    group.add_argument("--device", default="auto", metavar="DEVICE",
                       help="auto (a GPU when torch sees one; default), cpu, cuda or cuda:N: where base metrics, "
                            "BatchNorm calibration, fine-tunes and scoring run (FLOPs and CPU latency are always "
                            "measured on the CPU; nothing records the device)")
    group.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                       help="precision of fine-tunes (autocast; fp16 with a gradient scaler; default bf16 on a GPU "
                            "that supports it, else fp32); scoring is always fp32")
    group.add_argument("--metric", metavar="NAME", help=metric)


METRIC_HELP = ("accuracy (top-1, default), top5, perplexity (causal language models), neg_loss (minus the mean cross "
               "entropy) or pkg.module:fn, a function (output, target) -> float averaged over batches (higher is "
               "better unless fn.higher_is_better = False)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress",
        description="AutoML compression search for PyTorch: give a budget, get a replayable recipe and a smaller "
                    "model.",
    )
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("search", help="search for a recipe that meets a budget",
                       description="Search per-layer compression settings that meet the budget with the least "
                                   "accuracy lost. Writes OUT/recipe.yaml and OUT/study.db; the same command "
                                   "again resumes the study.")
    s.add_argument("--budget", action="append", metavar="METRIC=VALUE",
                   help="flops=0.3 (ratio of the base), flops=120M, params=50k, size=1.5MB; "
                        "comma-separated or repeated (default flops=0.3)")
    s.add_argument("--trials", type=int, metavar="N",
                   help="search trials to finish in all (default: the strategy's; 30, condensa 20, genetic 6, haloc 4)")
    s.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="start no trial after this many seconds of search (from the first trial; the running one "
                        "finishes), then make the recipe from the trials so far; with --trials, whichever comes "
                        "first, without it as many trials as fit (default: no limit)")
    s.add_argument("--strategy", default="bo", metavar="NAME",
                   help="one of: " + ", ".join(_strategy_names()) + " (default bo)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the strategy, e.g. --option generations=20 (repeatable; see README)")
    s.add_argument("--objective", default="accuracy", choices=("accuracy", "pareto", "cost"),
                   help="accuracy: the best proxy accuracy within the budget (default); pareto: also save the "
                        "accuracy/cost front to OUT/pareto.yaml (any point exportable with `autocompress export`); "
                        "cost: the cheapest point on the budget's first metric, within the budget, whose proxy "
                        "accuracy is at most --max-accuracy-drop below the base model's (strategies bo, random, "
                        "uniform, nsga2, condensa)")
    s.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                   help="proxy accuracy the user gives up at most (in the --metric's own units: points of "
                        "perplexity for perplexity): the accuracy floor of --objective cost, and condensa's "
                        "level set under any objective (default 1.0)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--out", default="autocompress-run", metavar="DIR", help="output folder (default autocompress-run)")
    s.add_argument("--calibration-batches", type=int, default=20, metavar="N",
                   help="training batches for BatchNorm recalibration (default 20)")
    s.add_argument("--finetune-steps", type=int, default=20, metavar="N",
                   help="distillation fine-tune steps per trial in the proxy (default 20)")
    s.add_argument("--pruner", default="none", metavar="NAME",
                   help="stop unpromising trials early from their proxy score after 1/4 and 1/2 of the fine-tune "
                        "steps: none (default), median, sha (successive halving) or hyperband (Optuna's pruners; "
                        "on --backend ray, Ray Tune's ASHA or median stopping); pruned trials count toward --trials "
                        "and never become the recipe")
    s.add_argument("--final-finetune-steps", type=int, default=300, metavar="N",
                   help="training steps recovering the chosen recipe, the regime's and the fine-tune's (default 300)")
    s.add_argument("--lr", type=float, default=1e-3, metavar="LR",
                   help="peak learning rate of every fine-tune, the proxy's and the recipe's (Adam, cosine; default "
                        "1e-3; at MNIST's 16-80x sparsity 5e-3 did better, see BENCHMARKS.md)")
    s.add_argument("--final-recovery", default="distill", metavar="NAME",
                   help="recovery regime of the chosen recipe, one of: " + ", ".join(_recovery_names())
                        + " (default distill; every trial's proxy uses distill)")
    s.add_argument("--recovery-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the recovery regime, e.g. --recovery-option rho=0.001 (repeatable; see README)")
    s.add_argument("--knobs", metavar="KINDS",
                   help="knob kinds to search, comma-separated from channels, sparsity, rank, bits "
                        "(default: those that lower the budget's metrics: channels for flops; "
                        "channels,sparsity for params; channels,sparsity,bits for size)")
    s.add_argument("--sparsity-pattern", default="unstructured", metavar="PATTERN",
                   help="pattern of sparsity knobs: unstructured, N:M such as 2:4, or a block such as 4x4")
    s.add_argument("--decomposition", default="tucker2", choices=("tucker2", "spatial"),
                   help="how rank knobs factorise kxk convolutions (Linear and 1x1 use svd; default tucker2)")
    s.add_argument("--channel-multiple", type=int, default=8, metavar="N",
                   help="keep channel counts in multiples of N (halved for narrow groups; 16 suits AVX-512 CPUs, "
                        "8 GPUs; 1 for any count; default 8)")
    s.add_argument("--latency-batch", type=int, default=1, metavar="N",
                   help="batch size at which latency budgets are predicted and measured (default 1)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    d = s.add_argument_group("running trials elsewhere")
    d.add_argument("--storage", metavar="URL",
                   help="keep the study in this database (any SQLAlchemy URL: sqlite:///shared.db, "
                        "postgresql://...) so `autocompress worker` processes can join it (default OUT/study.db)")
    d.add_argument("--study", default="autocompress", metavar="NAME",
                   help="the study's name in --storage (default autocompress)")
    d.add_argument("--backend", default="local", choices=("local", "ray"),
                   help="where trials run: local (this process, default) or ray (Ray Tune; pip install "
                        "'autocompress[ray]')")
    d.add_argument("--address", metavar="ADDRESS",
                   help="Ray cluster to join: auto, or ray://host:10001 (default: start a local Ray)")
    d.add_argument("--workers", type=int, metavar="N", help="Ray trials at once (default: CPUs / --cpus-per-trial)")
    d.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="CPUs per Ray trial (default 1)")
    d.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="N",
                   help="GPUs per Ray trial (default 0); a trial given a GPU runs on it, else on the CPU")
    _run_options(s, METRIC_HELP + "; the recipe records it")
    _model_options(s)

    w = sub.add_parser("worker", help="evaluate trials of a search kept in a shared database",
                       description="Join a study that `autocompress search --storage URL --study NAME` made and "
                                   "evaluate its trials until it has as many as the search asked for. Start as "
                                   "many workers as you like, on any machine that reaches the database; give them "
                                   "the same --model/--weights/--data as the search.")
    w.add_argument("--storage", required=True, metavar="URL", help="the search's --storage URL")
    w.add_argument("--study", default="autocompress", metavar="NAME",
                   help="the search's --study (default autocompress)")
    w.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _run_options(w, "the search's --metric, needed again where it is pkg.module:fn (built-ins come from the study)")
    _model_options(w)

    a = sub.add_parser("apply", help="replay a recipe on a model and export the compressed model",
                       description="Rebuild the compressed model a recipe describes (channels removed, "
                                   "sparsity baked in, fine-tune replayed), check it against the recipe's "
                                   "metrics and export it with torch.export (dynamic batch size).")
    a.add_argument("recipe", metavar="RECIPE", help="a recipe.yaml written by search")
    a.add_argument("--out", metavar="FILE.pt2", help="where to write the exported model (default beside the recipe)")
    a.add_argument("--finetune", type=float, metavar="EPOCHS",
                   help="recover for this many epochs of the training data (the regime's and the fine-tune's "
                        "together) instead of the recipe's steps")
    a.add_argument("--recovery", metavar="NAME",
                   help="recover with this regime instead of the recipe's, one of: " + ", ".join(_recovery_names()))
    a.add_argument("--recovery-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the recovery regime (repeatable)")
    a.add_argument("--onnx", action="store_true",
                   help="also write FILE.onnx (dynamic batch, BatchNorm folded; needs pip install "
                        "'autocompress[onnx]')")
    a.add_argument("--int8", action="store_true",
                   help="also write a real int8 CPU model (TorchScript, FILE.int8.pt) when every quantised "
                        "layer of the recipe is 8-bit, and report its measured accuracy and latency")
    _run_options(a, "score with this metric instead of the recipe's (" + METRIC_HELP + "); needed where the recipe "
                 "was scored with pkg.module:fn")
    _model_options(a)

    t = sub.add_parser("latency", help="predicted per-layer latency of a model (or a recipe's model) on a target",
                       description="Print the per-layer latency table a target's latency model predicts for the "
                                   "base model and, given a recipe, for its compressed model.")
    t.add_argument("recipe", nargs="?", metavar="RECIPE", help="a recipe.yaml (default: the base model only)")
    t.add_argument("--target", required=True, metavar="TARGET",
                   help="a preset (" + ", ".join(_target_names()) + ") or a device .yaml file")
    t.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    _model_options(t)

    p = sub.add_parser("profile", help="measure this machine's ops and fit a learned latency model",
                       description="Time random convolution, pointwise, depthwise, linear and attention ops on "
                                   "this machine and the layers of the built-in zoo models (and of yours, with "
                                   "--model), compressed at random; fit one regressor per kind (with adaptive "
                                   "sampling around badly predicted ops); time those models whole to learn what "
                                   "runs between the layers; save it (JSON) where latency budgets on this target "
                                   "will use it.")
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="device to profile (default cpu)")
    p.add_argument("--samples", type=int, default=300, metavar="N", help="first samples per op kind (default 300)")
    p.add_argument("--rounds", type=int, default=2, metavar="N", help="adaptive sampling rounds (default 2)")
    p.add_argument("--ops-only", action="store_true",
                   help="skip the whole-model measurements (totals are then the sum of the ops)")
    p.add_argument("--out", metavar="FILE.json", help="where to save (default: the cache folder, used by searches)")
    own = p.add_argument_group("your model (profiled with the zoo's when given)")
    own.add_argument("--model", metavar="PKG.MODULE:ATTR", help="an nn.Module, or a function returning one")
    own.add_argument("--weights", metavar="FILE", help="a state dict for the model (loaded with weights_only=True)")
    own.add_argument("--data", metavar="PKG.MODULE:ATTR",
                     help="a function returning (train, val[, test]) iterables of (x, y) batches (for the input shape)")

    r = sub.add_parser("report", help="write report.html and PNGs for a search folder",
                       description="Pictures of a search: accuracy against FLOPs/latency with every trial, the "
                                   "front, base and chosen recipe; best so far; the recipe layer by layer; the "
                                   "per-layer latency table. One self-contained HTML page.")
    r.add_argument("folder", metavar="DIR", help="a search's --out folder")
    _model_options(r)

    e = sub.add_parser("export", help="turn one trial of a search (e.g. a point of pareto.yaml) into a recipe",
                       description="Write the recipe of one complete search trial within the budget (any point "
                                   "of DIR/pareto.yaml): replayed with the search's final fine-tune and measured, "
                                   "ready for `autocompress apply`.")
    e.add_argument("folder", metavar="DIR", help="a search's --out folder")
    e.add_argument("--trial", required=True, metavar="N", help="the trial number (the 'trial' of a pareto.yaml point)")
    e.add_argument("--out", metavar="RECIPE", help="where to write the recipe (default DIR/recipe-trial-N.yaml)")
    _run_options(e, "the search's --metric, needed again where it is pkg.module:fn (built-ins come from the study)")
    _model_options(e)

    w = sub.add_parser("show", help="print a recipe readably")
    w.add_argument("recipe", metavar="RECIPE")
    return parser


def _target_names() -> list[str]:
    from ..latency_models import target_names

    return target_names()


def _latency(args) -> int:
    from ..core.errors import AutocompressError
    from ..core.ops import space_ops
    from ..core.recipe import Recipe
    from ..engine.recipes import check_recipe
    from ..latency_models import get_latency_model
    from ..models.workload import load_workload
    from ..spaces import build_space

    if args.batch < 1:
        raise AutocompressError(f"--batch {args.batch} must be 1 or more")
    model = get_latency_model(args.target)
    recipe = Recipe.load(args.recipe) if args.recipe else None
    workload = load_workload(args.model, args.weights, args.data,
                             data_for="whose first batch gives the model's input shape")
    space = check_recipe(workload, recipe) if recipe else build_space(workload.model, workload.example_input)
    base = model.predict(space_ops(space, space.resolve(space.neutral())), args.batch)
    print(f"base model ({workload.name}) on {args.target}:\n{base.table()}")
    if recipe is not None:
        small = model.predict(space_ops(space, recipe.layers), args.batch)
        print(f"\ncompressed ({args.recipe}) on {args.target}:\n{small.table()}")
        print(f"\npredicted speedup: {base.total_ms / small.total_ms:.2f}x")
    return 0


def _report(args) -> int:
    from ..models.workload import load_workload
    from ..report.html import write_report

    path = write_report(args.folder, load_workload(args.model, args.weights, args.data))
    print(f"report: {path}")
    return 0


def _profile(args) -> int:
    from ..core.errors import AutocompressError
    from ..latency_models.measured import device_key
    from ..latency_models.profiling import profile_device
    from ..latency_models.registry import learned_path
    from ..models import zoo

    if args.samples < 10 or args.rounds < 0:
        raise AutocompressError("--samples must be 10 or more and --rounds zero or more")
    if args.model and args.ops_only:
        raise AutocompressError("--model profiles your model's layers and times it whole; --ops-only skips both")
    own = []
    if args.model:
        from ..models.workload import load_workload

        workload = load_workload(args.model, args.weights, args.data,
                                 data_for="whose first batch gives the model's input shape")
        own = [(workload.name, workload.model, workload.example_input)]
    models = [] if args.ops_only else zoo.instances(zoo.PROFILED) + own
    model = profile_device(args.target, args.samples, args.rounds, models=models,
                           progress=lambda line: print(f"profile: {line}", flush=True))
    path = Path(args.out) if args.out else learned_path(args.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    print(f"learned latency model for {device_key(args.target)} saved to {path}")
    return 0


def _strategy_names() -> list[str]:
    from ..search import STRATEGIES

    return list(STRATEGIES)


def _recovery_names() -> list[str]:
    from ..evaluators.recovery import recovery_names

    return recovery_names()


def _options(pairs: list[str], flag: str = "--option") -> dict:
    """``--option key=value`` pairs, values read as YAML scalars (numbers, true/false)."""
    import yaml

    from ..core.errors import AutocompressError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise AutocompressError(f"{flag} {pair!r} is not of the form key=value")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..core.errors import AutocompressError
    from ..engine.stopping import stop_on_signals

    try:
        with stop_on_signals():
            return {"search": _search, "apply": _apply, "show": _show, "latency": _latency, "profile": _profile,
                    "report": _report, "export": _export, "worker": _worker}[args.command](args)
    except AutocompressError as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print("\nautocompress: interrupted; finished trials are kept, run the same command to resume",
              file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


def _runtime(args):
    """The Runtime ``--device`` and ``--precision`` name (AutocompressError: exit 2), checked
    before any model is loaded."""
    from ..evaluators.device import runtime

    return runtime(args.device, args.precision)


def _search(args) -> int:
    from ..core import budget
    from ..core.errors import AutocompressError, BudgetError

    if not args.max_accuracy_drop >= 0:
        raise AutocompressError(f"--max-accuracy-drop {args.max_accuracy_drop} must be zero or more points")
    if args.latency_batch < 1:
        raise AutocompressError(f"--latency-batch {args.latency_batch} must be 1 or more")
    if args.channel_multiple < 1:
        raise AutocompressError(f"--channel-multiple {args.channel_multiple} must be 1 or more")
    if not 0 < args.lr < float("inf"):
        raise AutocompressError(f"--lr {args.lr} must be a number above 0")
    for name in ("trials", "calibration_batches", "finetune_steps", "final_finetune_steps"):
        if name == "trials" and args.trials is None:
            continue
        if getattr(args, name) < 0 or (name == "trials" and args.trials < 1):
            raise AutocompressError(f"--{name.replace('_', '-')} {getattr(args, name)} must be "
                                    f"{'at least 1' if name == 'trials' else 'zero or more'}")
    from ..engine.settings import check_time_limit

    check_time_limit(args.time_limit, "--time-limit")
    parsed = budget.parse(args.budget or ["flops=0.3"])
    from ..engine.pruning import check_pruner

    check_pruner(args.pruner)
    from ..engine.runner import run_search
    from ..engine.settings import SearchSettings, check_objective
    from ..models.workload import load_workload
    from ..report.table import comparison
    from ..search import STRATEGIES

    if args.strategy not in STRATEGIES:
        raise AutocompressError(f"unknown strategy {args.strategy!r}; use one of {', '.join(STRATEGIES)}")
    check_objective(args.objective, STRATEGIES[args.strategy], args.strategy, args.pruner)
    from ..core.kinds import kind_names
    from ..core.patterns import parse_pattern

    knobs = tuple(k.strip() for k in (args.knobs or "").split(",") if k.strip())
    for kind in knobs:
        if kind not in kind_names():
            raise AutocompressError(f"--knobs names unknown kind {kind!r}; use some of {', '.join(kind_names())}")
    try:
        parse_pattern(args.sparsity_pattern)
    except ValueError as exc:
        raise AutocompressError(f"--sparsity-pattern: {exc}") from None
    _runtime(args)
    from ..models.workload import load_metric

    metric = load_metric(args.metric)
    workload = load_workload(args.model, args.weights, args.data)
    settings = SearchSettings(
        budget=parsed, trials=args.trials, time_limit=args.time_limit, strategy=args.strategy, seed=args.seed,
        calibration_batches=args.calibration_batches, finetune_steps=args.finetune_steps,
        final_finetune_steps=args.final_finetune_steps, lr=args.lr, knobs=knobs,
        sparsity_pattern=args.sparsity_pattern, conv_decomposition=args.decomposition,
        max_accuracy_drop=args.max_accuracy_drop, objective=args.objective, channel_multiple=args.channel_multiple,
        latency_batch=args.latency_batch, metric=args.metric or "accuracy",
        strategy_options=_options(args.option), final_recovery=args.final_recovery,
        recovery_options=_options(args.recovery_option, "--recovery-option"), pruner=args.pruner,
    )
    settings.make_recovery()  # an unknown regime or option: one line, before the search
    ray_options = {}
    if args.backend == "ray":
        ray_options = {"address": args.address, "workers": args.workers, "cpus_per_trial": args.cpus_per_trial,
                       "gpus_per_trial": args.gpus_per_trial}
    elif args.address or args.workers:
        raise AutocompressError("--address and --workers are for --backend ray; without Ray, start "
                                "`autocompress worker --storage URL` processes beside a search with --storage")
    try:
        result = run_search(workload, settings, args.out, progress=not args.no_progress, storage=args.storage,
                            study_name=args.study, backend=args.backend, device=args.device,
                            precision=args.precision, **ray_options)
    except BudgetError as exc:
        if "no finished trial" in str(exc):
            print(f"autocompress: {exc}", file=sys.stderr)
            return EXIT_NO_RESULT
        raise
    metrics = result.recipe.metrics
    print(f"\nbudget {parsed} on {workload.name}: best of {result.recipe.search['trials']} trials "
          f"(trial {result.recipe.search['best_trial']}), {metric.name} on the {workload.test_split} split\n")
    print(comparison(metrics["base"], metrics["compressed"]))
    print(f"\nrecipe: {result.recipe_path}")
    try:
        from ..report.html import write_report

        print(f"report: {write_report(args.out, workload)}")
    except Exception as exc:  # the recipe is saved; a picture that fails must not fail the search
        print(f"autocompress: the report could not be written ({type(exc).__name__}: {exc}); "
              f"the recipe is saved", file=sys.stderr)
    print(f"replay: autocompress apply {result.recipe_path} --out {Path(args.out) / 'model.pt2'}")
    return 0


def _worker(args) -> int:
    from ..engine.runner import run_worker
    from ..models.workload import load_workload

    _runtime(args)
    ran = run_worker(load_workload(args.model, args.weights, args.data), args.storage, args.study,
                     progress=not args.no_progress, device=args.device, precision=args.precision, metric=args.metric)
    print(f"worker: {ran} trials run; the study {args.study!r} has the trials its search asked for")
    return 0


def _apply(args) -> int:
    from ..compress.export import export_model, export_onnx, require_onnx
    from ..core.errors import AutocompressError
    from ..core.recipe import Recipe
    from ..engine.recipes import finetune_steps_for, replaced_recovery, replay
    from ..latency_models.measured import measure_pair
    from ..models.workload import load_workload
    from ..report.table import comparison

    recipe = Recipe.load(args.recipe)
    quantised = {name: s["bits"] for name, s in recipe.layers.items() if s.get("bits", 32) < 32}
    if args.int8 and (not quantised or set(quantised.values()) != {8}):
        odd = next((f"{n} at {b} bits" for n, b in quantised.items() if b != 8), "no quantised layer")
        raise AutocompressError(f"--int8 needs every quantised layer of the recipe at 8 bits; it has {odd}")
    where = _runtime(args)
    options = _options(args.recovery_option, "--recovery-option")
    regime = replaced_recovery(recipe.recovery, args.recovery, options)  # an unknown regime: before any work
    workload = load_workload(args.model, args.weights, args.data)
    if args.finetune is not None:
        print(f"recovering {args.finetune:g} epochs ({finetune_steps_for(workload, args.finetune)} steps) with "
              f"{regime.get('method', 'distill')} from the base model")
    if args.onnx:
        require_onnx()  # before the fine-tune, not after it
    model, metrics = replay(workload, recipe, args.finetune, runtime=where, metric=args.metric,
                            recovery=args.recovery, recovery_options=options)
    _, metrics["latency_cpu_ms"] = measure_pair(workload.model, model, workload.example_input)
    out = Path(args.out) if args.out else Path(args.recipe).with_name("model.pt2")
    export_model(model, workload.example_input, out)
    recorded = recipe.metrics.get("compressed", {})
    print(f"applied {args.recipe} to {workload.name}\n")
    if recorded:
        print(comparison(recorded, metrics, titles=("recipe", "applied")))
    print(f"\nexported: {out} (load with torch.export.load; any batch size)")
    if args.onnx:
        onnx_path = out.with_suffix(".onnx")
        export_onnx(model, workload.example_input, onnx_path)
        print(f"exported: {onnx_path} (ONNX, input 'input' of any batch size)")
    if args.int8:
        from ..compress.int8 import to_int8
        from ..engine.settings import recorded_metric
        from ..evaluators import batches, evaluate
        from ..models.workload import load_metric

        metric = load_metric(recorded_metric(recipe.metric, args.metric, "the recipe", same=False))
        int8 = to_int8(model, workload.example_input, quantised, workload.train, recipe.recovery["calibration_batches"])
        int8_path = out.with_suffix(".int8.pt")
        int8.save(str(int8_path))
        float_ms, int8_ms = measure_pair(model, int8, workload.example_input)
        print(f"int8: {int8_path} (load with torch.jit.load); {workload.test_split} {metric.name} "
              f"{metric.format(evaluate(int8, workload.test, metric))} vs {metric.format(metrics[metric.name])} float "
              f"(on the CPU); CPU latency at batch {batches.batch_size(workload.example_input)} {int8_ms:.3f} ms vs "
              f"{float_ms:.3f} ms float ({float_ms / int8_ms:.2f}x)")
    return 0


def _export(args) -> int:
    from ..core.errors import AutocompressError
    from ..engine.recipes import export_trial
    from ..models.workload import load_workload
    from ..report.table import comparison

    try:
        trial = int(args.trial)
    except ValueError:
        trial = -1
    if trial < 0:
        raise AutocompressError(f"--trial {args.trial!r} is not a trial number; use one listed in "
                                f"{Path(args.folder) / 'pareto.yaml'}, e.g. --trial 3")
    where = _runtime(args)
    workload = load_workload(args.model, args.weights, args.data)
    recipe, path, _ = export_trial(workload, args.folder, trial, args.out, where, args.metric)
    metric = recipe.metric if ":" not in recipe.metric else recipe.metric.rpartition(":")[2]
    print(f"trial {trial} of {args.folder} on {workload.name}, {metric} on the {workload.test_split} split\n")
    print(comparison(recipe.metrics["base"], recipe.metrics["compressed"]))
    print(f"\nrecipe: {path}")
    print(f"replay: autocompress apply {path}")
    return 0


def _show(args) -> int:
    from ..core.recipe import Recipe
    from ..report.table import comparison, format_rows

    recipe = Recipe.load(args.recipe)
    print(f"recipe for {recipe.model.get('name')} (fingerprint {recipe.model.get('fingerprint')}), "
          f"budget {', '.join(recipe.budget) or '-'}")
    s = recipe.search
    if s:
        print(f"search: {s.get('strategy')}, {s.get('trials')} trials, seed {s.get('seed')}, "
              f"best trial {s.get('best_trial')}")
    if recipe.metric != "accuracy":
        print(f"metric: {recipe.metric}")
    print()
    rows = [[name, str(v.get("out_channels", "-")),
             f"{v.get('sparsity', 0.0):.3f}" + (f" {v['pattern']}" if v.get("pattern") else ""),
             f"{v['rank']} {v['decomposition']}" if v.get("rank") else "-", str(v.get("bits", 32))]
            for name, v in recipe.layers.items()]
    print(format_rows(["layer", "out_channels", "sparsity", "rank", "bits"], rows))
    if recipe.metrics.get("base") and recipe.metrics.get("compressed"):
        print()
        print(comparison(recipe.metrics["base"], recipe.metrics["compressed"]))
    for name, why in recipe.excluded.items():
        print(f"excluded: {name}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
