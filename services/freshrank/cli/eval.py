"""`freshrank eval`: prequential evaluation (HR@10/NDCG@10) of models and baselines on a stream."""

from __future__ import annotations

import argparse
from pathlib import Path

from freshrank.cli.common import Subparsers, add_command

DEFAULT_MODELS = "popularity,static,mf,din"


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "eval",
        "prequential evaluation (HR@10/NDCG@10) of models and baselines on a stream",
        description=(
            "Replay a time-ordered stream in micro-batches; every batch is scored before any "
            "model trains on it (test-then-train). Models: popularity (time-decayed counts), "
            "static (MF trained on the first 20%%, then frozen), static-din, mf, din."
        ),
    )
    parser.add_argument("--dataset", choices=["ml-100k", "synthetic"], default="ml-100k")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="only the first N events")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension")
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("--negatives", type=int, default=100, help="sampled-eval negatives")
    parser.add_argument(
        "--full-eval-events", type=int, default=16, help="events per batch ranked vs all items"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=None, help="JSON path")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.status import Status

    from freshrank.bench.report import results_dir
    from freshrank.evaluation import EvalSettings, load_dataset, run_model
    from freshrank.evaluation.report import print_table, write_json
    from freshrank.evaluation.runner import MODELS, device_name

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    settings = EvalSettings(
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        dim=args.dim,
        history_len=args.history_len,
        negatives=args.negatives,
        full_eval_events=args.full_eval_events,
    )
    console = Console()
    if not console.is_terminal:
        console = Console(width=132)  # piped into a log: keep the table's columns readable
    dataset = load_dataset(args.dataset, args.limit)
    results = []
    total = len(dataset.events)
    for name in models:
        with console.status(f"{name} on {dataset.name}...") as status:

            def progress(done: int, status: Status = status, name: str = name) -> None:
                status.update(f"{name} on {dataset.name}: {done:,}/{total:,} events")

            results.append(run_model(name, dataset, settings, on_progress=progress))
        console.log(f"{name}: HR@10 {results[-1].overall.hr10:.4f} in {results[-1].seconds:.1f}s")
    print_table(dataset, settings, results, console)
    output = args.output or results_dir() / f"eval-{dataset.name}.json"
    write_json(output, dataset, settings, results, device_name(settings))
    console.print(f"wrote {output}")
    return 0
