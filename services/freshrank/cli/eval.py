"""`freshrank eval`: prequential evaluation (HR@10/NDCG@10) of models and baselines on a stream."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from freshrank.cli.common import Subparsers, add_command

DEFAULT_MODELS = "popularity,static-mf,mf,static-din,din,static-sasrec,sasrec"
DEFAULT_CURVE_INTERVALS = "batch,1000,10000,never"


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "eval",
        "prequential evaluation (HR@10/NDCG@10) of models and baselines on a stream",
        description=(
            "Replay a time-ordered stream in micro-batches; every batch is scored before any "
            "model trains on it (test-then-train). Models: popularity (time-decayed counts), "
            "mf, din, sasrec (self-attention over the history with a popularity prior), and "
            "static-<model> (the same model trained on the first 20%%, then frozen). "
            "With --curve: the freshness curve, HR@10 against the export interval."
        ),
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="ml-100k, amazon-beauty, synthetic, or the path of a CSV/TSV interaction file "
        "with a header (repeat for several; default ml-100k)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory holding ml-100k/ and amazon-beauty/ (default: $FRESHRANK_DATA_DIR, "
        "else shared/data beside the checkout)",
    )
    parser.add_argument(
        "--separator", default=None, help="file: column separator (default: by suffix)"
    )
    parser.add_argument("--user-column", default=None, help="file: user column (default: by name)")
    parser.add_argument("--item-column", default=None, help="file: item column (default: by name)")
    parser.add_argument("--time-column", default=None, help="file: time column (default: by name)")
    parser.add_argument(
        "--time-unit", default="auto", choices=["auto", "s", "ms", "us", "ns", "iso"]
    )
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="only the first N events")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per model (mean, 95%% CI)")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension")
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument(
        "--views", type=int, default=None, help="sasrec: item-table views (default: the model's)"
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        default=None,
        help="sasrec: users voting in the kNN term, 0: no term (default: the model's)",
    )
    parser.add_argument("--negatives", type=int, default=100, help="sampled-eval negatives")
    parser.add_argument(
        "--full-eval-events", type=int, default=16, help="events per batch ranked vs all items"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="model runs at once, one process each (default: the CPU count; 1: in this process)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per run (default: the CPUs divided among the jobs)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (one dataset)")
    parser.add_argument(
        "--curve", action="store_true", help="freshness curve instead of the model table"
    )
    parser.add_argument("--curve-model", default="sasrec", help="model of the freshness curve")
    parser.add_argument(
        "--curve-intervals",
        default=DEFAULT_CURVE_INTERVALS,
        help="export intervals in events: 'batch' (every micro-batch), N, 'never' "
        "(exported once after the first 20%%)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from freshrank.evaluation import EvalSettings
    from freshrank.evaluation.runner import MODELS

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in [*models, args.curve_model] if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(args.threads)
    settings = EvalSettings(
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        dim=args.dim,
        history_len=args.history_len,
        negatives=args.negatives,
        full_eval_events=args.full_eval_events,
        **{
            name: getattr(args, name)
            for name in ("views", "neighbours")
            if getattr(args, name) is not None
        },
    )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped into a log: keep the table's columns readable
    datasets = args.dataset or ["ml-100k"]
    if args.output is not None and len(datasets) > 1:
        raise SystemExit("--output names one file: give one --dataset")
    for name in datasets:
        dataset = _load(args, name)
        if args.curve:
            _curve(args, name, dataset, settings, console)
        else:
            _table(args, name, dataset, settings, models, console)
    return 0


def _load(args: argparse.Namespace, name: str) -> Any:
    try:
        return _loader(args, name)()
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None


def _loader(args: argparse.Namespace, name: str) -> Any:
    """``load_dataset`` of ``name`` with the flags, as a picklable call (eval.pool's workers
    load the stream themselves)."""
    import functools

    from freshrank.evaluation import load_dataset
    from freshrank.sim.files import FileFormat

    fmt = None
    if any((args.separator, args.user_column, args.item_column, args.time_column)) or (
        args.time_unit != "auto"
    ):
        fmt = FileFormat(
            separator=args.separator.encode().decode("unicode_escape") if args.separator else None,
            user_column=args.user_column,
            item_column=args.item_column,
            time_column=args.time_column,
            time_unit=args.time_unit,
        )
    return functools.partial(load_dataset, name, args.limit, fmt=fmt, data_dir=args.data_dir)


def _table(
    args: argparse.Namespace,
    source: str,
    dataset: Any,
    settings: Any,
    models: list[str],
    console: Any,
) -> None:
    import dataclasses

    from freshrank.bench.report import results_dir
    from freshrank.evaluation.pool import RunSpec
    from freshrank.evaluation.report import print_table, write_json
    from freshrank.evaluation.runner import device_name

    runs = [
        RunSpec(name, dataclasses.replace(settings, seed=seed))
        for name in models
        for seed in range(args.seed, args.seed + args.seeds)
    ]

    def log(result: Any) -> None:
        console.log(
            f"{dataset.name} {result.model} seed {result.seed}: HR@10 {result.overall.hr10:.4f} "
            f"NDCG@10 {result.overall.ndcg10:.4f} in {result.seconds:.1f}s"
        )

    if args.jobs > 1 and len(runs) > 1:
        with console.status(f"{len(runs)} runs on {dataset.name}, {args.jobs} at once..."):
            results = _in_parallel(args, source)(runs, on_done=log)
    else:
        results = [_run_here(spec, dataset, console, log) for spec in runs]
    by_model: dict[str, list[Any]] = {}
    for result in results:
        by_model.setdefault(result.model, []).append(result)
    print_table(dataset, settings, by_model, console)
    output = args.output or results_dir() / f"eval-{dataset.name}.json"
    write_json(output, dataset, settings, by_model, device_name(settings))
    console.print(f"wrote {output}")


def _in_parallel(args: argparse.Namespace, source: str) -> Any:
    """Runs specs side by side in ``--jobs`` processes, each loading ``source`` itself."""
    import functools

    from freshrank.evaluation.pool import run_in_parallel

    return functools.partial(
        run_in_parallel, load=_loader(args, source), jobs=args.jobs, threads=args.threads
    )


def _run_here(spec: Any, dataset: Any, console: Any, log: Any) -> Any:
    """One run in this process, its progress in the console's status line."""
    from rich.status import Status

    from freshrank.evaluation import run_model

    total = len(dataset.events)
    name = spec.model
    with console.status(f"{name} on {dataset.name}...") as status:

        def progress(done: int, status: Status = status) -> None:
            status.update(f"{name} on {dataset.name}: {done:,}/{total:,} events")

        result = run_model(name, dataset, spec.settings, on_progress=progress)
    log(result)
    return result


def _curve(
    args: argparse.Namespace, source: str, dataset: Any, settings: Any, console: Any
) -> None:
    from freshrank.bench.report import results_dir
    from freshrank.evaluation.freshness import parse_intervals, run_curve, write_curve

    intervals = parse_intervals(args.curve_intervals)
    with console.status(f"freshness curve on {dataset.name}..."):
        curve = run_curve(
            args.curve_model,
            dataset,
            settings,
            intervals,
            seeds=args.seeds,
            log=console.log,
            run_all=_in_parallel(args, source) if args.jobs > 1 else None,
        )
    base = args.output or results_dir() / f"freshness-{dataset.name}.json"
    json_path, png_path = write_curve(curve, base)
    console.print(f"wrote {json_path} and {png_path}")
