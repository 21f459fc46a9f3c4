import dataclasses
import functools

from freshrank.evaluation import EvalSettings, RunResult, load_dataset, run_model
from freshrank.evaluation.pool import RunSpec, run_in_parallel

SETTINGS = EvalSettings(batch_size=256, dim=16, history_len=10, negatives=100, full_eval_events=8)


def test_runs_in_parallel_equal_the_same_runs_in_this_process() -> None:
    load = functools.partial(load_dataset, "synthetic", 1500)
    runs = [
        RunSpec("sasrec", SETTINGS),
        RunSpec("popularity", SETTINGS),
        RunSpec("sasrec", dataclasses.replace(SETTINGS, seed=1), publish_every=512),
    ]
    finished: list[RunResult] = []
    parallel = run_in_parallel(runs, load, jobs=2, threads=1, on_done=finished.append)
    dataset = load()
    here = [
        run_model(spec.model, dataset, spec.settings, publish_every=spec.publish_every)
        for spec in runs
    ]
    assert [(r.model, r.seed) for r in parallel] == [
        ("sasrec", 0),
        ("popularity", 0),
        ("sasrec", 1),
    ]
    assert len(finished) == len(runs)  # each reported as it finished
    for there, own in zip(parallel, here, strict=True):
        assert there.overall == own.overall  # same seed, one thread: the same numbers
        assert repr(there.series) == repr(own.series)  # repr: NaN (no full ranking) equals NaN
    assert parallel[0].overall != parallel[2].overall  # the seeds differ
