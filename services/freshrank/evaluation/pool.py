"""Several prequential runs at once, one process each.

The runs of a table (a model and a seed each) share nothing but the stream, and each is one
Python loop that keeps about one core busy: run side by side in ``jobs`` processes they take
the time of the longest chain instead of the sum (the seven models on MovieLens-100K: the
sum of their times on one core each, divided by the cores). Every worker loads the stream
itself (``load`` is called once per process) rather than receiving it pickled, and scores with
``threads`` torch threads so the workers do not oversubscribe the cores.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
from collections.abc import Callable, Sequence

from freshrank.evaluation.datasets import Dataset
from freshrank.evaluation.runner import EvalSettings, RunResult, run_model

__all__ = ["RunSpec", "run_here", "run_in_parallel"]

_dataset: Dataset | None = None  # the worker's stream, loaded once by ``_start_worker``


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One prequential run: ``run_model``'s arguments but the stream."""

    model: str
    settings: EvalSettings
    publish_every: int | None = None

    def run(self, dataset: Dataset) -> RunResult:
        return run_model(self.model, dataset, self.settings, publish_every=self.publish_every)


def run_here(runs: Sequence[RunSpec], dataset: Dataset) -> list[RunResult]:
    """``runs`` one after the other in this process."""
    return [spec.run(dataset) for spec in runs]


def run_in_parallel(
    runs: Sequence[RunSpec],
    load: Callable[[], Dataset],
    *,
    jobs: int,
    threads: int = 1,
    on_done: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """The results of ``runs``, in their order.

    ``load`` must be picklable (a module-level function or a ``functools.partial`` of one):
    each worker process calls it once. ``on_done`` sees each result as it finishes."""
    results: list[RunResult | None] = [None] * len(runs)
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that holds torch
    with concurrent.futures.ProcessPoolExecutor(
        max(1, min(jobs, len(runs))),
        mp_context=spawn,
        initializer=_start_worker,
        initargs=(load, threads),
    ) as pool:
        futures = {pool.submit(_run, spec): index for index, spec in enumerate(runs)}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_done is not None:
                on_done(result)
    return [result for result in results if result is not None]


def _start_worker(load: Callable[[], Dataset], threads: int) -> None:
    import torch

    global _dataset
    torch.set_num_threads(threads)
    _dataset = load()


def _run(spec: RunSpec) -> RunResult:
    if _dataset is None:
        raise RuntimeError("the worker has no stream: _start_worker did not run")
    return spec.run(_dataset)
