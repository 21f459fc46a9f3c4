import dataclasses
import json
from pathlib import Path

import pytest

from freshrank.cli import main
from freshrank.evaluation import Dataset, EvalSettings, RunResult, run_model
from freshrank.sim.synthetic import SyntheticConfig, SyntheticStream

SETTINGS = EvalSettings(batch_size=256, dim=16, history_len=10, negatives=100, full_eval_events=8)


@pytest.fixture(scope="module")
def drifting() -> Dataset:
    stream = SyntheticStream(
        SyntheticConfig(users=100, items=400, topics=40, events=16_000, drift_at=0.5, seed=3)
    )
    return Dataset("synthetic", list(stream.events()), drift_index=stream.drift_index)


@pytest.mark.parametrize(
    ("model", "static_model", "neighbours", "margin"),
    [
        ("mf", "static", 0, 0.1),
        ("sasrec", "static-sasrec", 0, 0.1),  # the model's own weights
        # With the kNN term a frozen memory still reads the users' fresh histories, and on
        # this stream (users change topics, items keep theirs) the items' co-occurrence
        # carries over the drift: measured at the end 0.858 fresh vs 0.832 frozen (without
        # the term 0.799 vs 0.665).
        ("sasrec", "static-sasrec", EvalSettings.neighbours, 0.015),
    ],
)
def test_incremental_model_recovers_after_drift_and_static_does_not(
    drifting: Dataset, model: str, static_model: str, neighbours: int, margin: float
) -> None:
    settings = dataclasses.replace(SETTINGS, neighbours=neighbours)
    incremental = run_model(model, drifting, settings)
    static = run_model(static_model, drifting, settings)
    assert incremental.after_drift is not None
    assert static.after_drift is not None
    # Before the cut both are the same model trained the same way.
    assert static.series[0]["hr@10"] == incremental.series[0]["hr@10"]
    final_incremental = incremental.series[-1]["hr@10"]
    final_static = static.series[-1]["hr@10"]
    # Measured (rolling HR@10 at the end): MF 0.62, static 0.46; after the drift 0.59 vs
    # 0.43. SASRec without the kNN term 0.80 vs 0.67; after the drift 0.80 vs 0.66.
    assert final_incremental > final_static + margin, (final_incremental, final_static)
    assert incremental.after_drift.hr10 > static.after_drift.hr10 + margin

    def before_drift(result: RunResult) -> float:
        return [p["hr@10"] for p in result.series if p["events"] <= drifting.drift_index][-1]

    # The incremental model ends above where it was before the drift.
    assert final_incremental > before_drift(incremental)
    if model == "mf":
        # Frozen MF falls below (frozen SASRec still reads the new session items, so it
        # partly follows the drift: its loss shows against the fresh model above).
        assert final_static < before_drift(static) - 0.03


def test_cli_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "eval-synthetic.json"
    code = main(
        [
            "eval",
            "--dataset",
            "synthetic",
            "--limit",
            "2048",
            "--models",
            "popularity,static,mf",
            "--threads",
            "1",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "popularity" in printed
    assert "HR@10" in printed
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"popularity", "static", "mf"}
    assert report["dataset"]["events"] == 2048
    for result in report["results"].values():
        assert 0.0 <= result["overall"]["hr10"] <= 1.0
        assert result["id_stats"]["collisions"] == 0


def _write_interactions(path: Path) -> None:
    """A small CSV in another layout: own column names, ISO times, same-day ties."""
    stream = SyntheticStream(SyntheticConfig(users=40, items=80, topics=8, events=1500, seed=5))
    lines = ["when,shopper,product,rating"]
    for index, event in enumerate(stream.events()):
        day = 1 + index // 60
        lines.append(f"2024-01-{day:02d}T00:00:00Z,{event.user_id},{event.item_id},5")
    path.write_text("\n".join(lines) + "\n")


def test_cli_evaluates_any_interaction_file_with_named_columns(tmp_path: Path) -> None:
    source = tmp_path / "shop.csv"
    _write_interactions(source)
    output = tmp_path / "eval-shop.json"
    args = ["eval", "--dataset", str(source), "--user-column", "shopper"]
    args += ["--item-column", "product", "--time-column", "when", "--time-unit", "iso"]
    args += ["--models", "popularity,sasrec", "--seeds", "2", "--threads", "1"]
    assert main([*args, "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["dataset"] == {
        "name": "shop",
        "events": 1500,
        "users": 40,
        "items": 79,  # one of the 80 planted items is never drawn
        "drift_index": None,
    }
    sasrec = report["results"]["sasrec"]
    assert sasrec["seeds"] == [0, 1]
    assert sasrec["summary"]["overall.hr10"]["ci95"] is not None


def test_a_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "shop.csv"
    _write_interactions(source)
    with pytest.raises(SystemExit, match="no user column 'customer'"):
        main(
            ["eval", "--dataset", str(source), "--user-column", "customer", "--time-column", "when"]
        )


def test_freshness_curve_writes_json_and_png(tmp_path: Path) -> None:
    output = tmp_path / "freshness-synthetic.json"
    args = ["eval", "--curve", "--dataset", "synthetic", "--limit", "3072", "--threads", "1"]
    args += ["--curve-model", "mf", "--curve-intervals", "batch,1000,never"]
    assert main([*args, "--output", str(output)]) == 0
    curve = json.loads(output.read_text())
    assert [p["interval"] for p in curve["points"]] == [None, 1000, -1]
    assert output.with_suffix(".png").stat().st_size > 1000
    fresh, stale = curve["points"][0]["hr10"], curve["points"][-1]["hr10"]
    assert fresh >= stale  # a model exported once after 20% cannot beat one kept fresh
