from pathlib import Path

import pytest

from freshrank.sim.files import FileFormat, data_dir, file_events, resolve_source


def test_rows_come_in_time_order_with_file_order_breaking_ties(tmp_path: Path) -> None:
    source = tmp_path / "log.tsv"
    source.write_text("user_id\titem_id\ttimestamp\nu1\ti3\t20\nu2\ti1\t10\nu1\ti2\t10\n")
    events = list(file_events(source))
    assert [(e.user_id, e.item_id, e.timestamp_ms) for e in events] == [
        ("u2", "i1", 10_000),
        ("u1", "i2", 10_000),
        ("u1", "i3", 20_000),
    ]
    assert len({e.event_id for e in events}) == 3


def test_separator_columns_and_unit_can_be_named(tmp_path: Path) -> None:
    source = tmp_path / "log.data"
    source.write_text("a;b;c\nx;y;1700000000000\n")
    fmt = FileFormat(separator=";", user_column="b", item_column="a", time_column="c")
    (event,) = file_events(source, fmt)
    assert (event.user_id, event.item_id, event.timestamp_ms) == ("y", "x", 1_700_000_000_000)


def test_bad_input_fails_before_any_event_with_the_reason(tmp_path: Path) -> None:
    source = tmp_path / "log.csv"
    source.write_text("user,item,time\nu1,i1,yesterday\n")
    with pytest.raises(ValueError, match=r"log\.csv"):
        file_events(source, FileFormat(time_unit="s"))
    (tmp_path / "other.csv").write_text("user,thing,time\n")
    with pytest.raises(ValueError, match="no item column"):
        file_events(tmp_path / "other.csv")


def test_shortcuts_resolve_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "amazon-beauty").mkdir()
    (tmp_path / "amazon-beauty" / "interactions.tsv").write_text("user_id\titem_id\ttime\n")
    monkeypatch.setenv("FRESHRANK_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    path, _ = resolve_source("amazon-beauty")
    assert path == tmp_path / "amazon-beauty" / "interactions.tsv"
    with pytest.raises(FileNotFoundError):
        resolve_source(str(tmp_path / "nope.csv"))


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"  # as spreadsheets save "CSV UTF-8"
    source.write_bytes(b"\xef\xbb\xbfuser_id,item_id,timestamp\r\nu1,i1,1000\r\n")
    (event,) = file_events(source)
    assert (event.user_id, event.item_id, event.timestamp_ms) == ("u1", "i1", 1_000_000)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("u2,i2", r"log\.csv:3: 2 fields where the header has 3"),
        (",i2,11", r"log\.csv:3: empty user"),
        ("u2, ,11", r"log\.csv:3: empty item"),
        ("u2,i2,soon", r"log\.csv:3: time 'soon' is not a number of s"),
    ],
)
def test_a_bad_row_names_its_line_and_what_is_wrong(tmp_path: Path, row: str, reason: str) -> None:
    source = tmp_path / "log.csv"
    source.write_text(f"user,item,time\nu1,i1,10\n{row}\nu3,i3,12\n")
    with pytest.raises(ValueError, match=reason):
        file_events(source, FileFormat(time_unit="s"))
