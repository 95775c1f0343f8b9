"""Photo metadata on ingest, read-only SQL, and similarity restricted by a metadata filter."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from imgvec.api import Library
from imgvec.errors import ImgvecError
from imgvec.index import rules
from tests.conftest import FAKE_ARGS, make_image

pytestmark = pytest.mark.databases


def exif_photo(
    path: Path, seed: int, make: str, model: str, taken: str, gps: tuple[float, float] | None = None
) -> Path:
    make_image(path, seed=seed)
    image = Image.open(path)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = make, model, 1
    exif.get_ifd(0x8769)[0x9003] = taken
    exif.get_ifd(0x8769)[0xA434] = "50mm f/1.8"
    if gps:
        lat, lon = gps
        exif.get_ifd(0x8825).update(
            {
                1: "N" if lat >= 0 else "S",
                2: (abs(lat), 0.0, 0.0),
                3: "E" if lon >= 0 else "W",
                4: (abs(lon), 0.0, 0.0),
            }
        )
    image.save(path, exif=exif.tobytes())
    return path


@pytest.fixture
def camera_library(imgvec, tmp_path: Path) -> Path:
    folder = tmp_path / "cams"
    for i in range(12):
        exif_photo(
            folder / ("canon" if i % 3 == 0 else "other") / f"c{i:02d}.jpg",
            seed=i,
            make="Canon" if i % 3 == 0 else "Nikon",
            model=f"Model {i % 2}",
            taken=f"2024:0{1 + i % 9}:15 10:00:00",
            gps=(48.5, -2.25) if i == 4 else None,
        )
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 0
    return folder


def test_exif_and_file_metadata_are_queryable(imgvec, camera_library: Path) -> None:
    rows = imgvec(
        "sql",
        "SELECT path, folder, width, height, format, camera_make, "
        "camera_model, lens, orientation, taken_at, gps_lat, gps_lon, modified_at "
        "FROM photos ORDER BY path",
        "--json",
    ).json()
    assert len(rows) == 12
    first = next(r for r in rows if r["path"].endswith("c04.jpg"))
    assert first["folder"] == str(camera_library / "other")
    assert (first["width"], first["height"], first["format"]) == (96, 64, "JPEG")
    assert (first["camera_make"], first["camera_model"], first["lens"]) == (
        "Nikon",
        "Model 0",
        "50mm f/1.8",
    )
    assert first["orientation"] == 1
    assert datetime.fromisoformat(first["taken_at"]) == datetime(2024, 5, 15, 10, 0)
    assert (first["gps_lat"], first["gps_lon"]) == (pytest.approx(48.5), pytest.approx(-2.25))
    assert first["modified_at"] is not None
    assert sum(r["camera_make"] == "Canon" for r in rows) == 4


def test_sql_outputs_table_json_and_csv(imgvec, camera_library: Path) -> None:
    statement = "SELECT camera_make, count(*) AS n FROM photos GROUP BY 1 ORDER BY 1"
    assert imgvec("sql", statement, "--json").json() == [
        {"camera_make": "Canon", "n": 4},
        {"camera_make": "Nikon", "n": 8},
    ]
    assert list(csv.reader(io.StringIO(imgvec("sql", statement, "--csv").stdout))) == [
        ["camera_make", "n"],
        ["Canon", "4"],
        ["Nikon", "8"],
    ]
    table = imgvec("sql", statement).stdout
    assert "camera_make" in table and "Nikon" in table


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM images",
        "UPDATE images SET path = 'x'",
        "DROP TABLE embeddings",
        "INSERT INTO models (name, layer, weights, preprocessing, dim, created_at) "
        "VALUES ('a', 'b', 'c', 'd', 1, '2024-01-01')",
        "CREATE TABLE evil (x INTEGER)",
        "COMMIT; DELETE FROM images",
        "SELECT 1; DELETE FROM images",
    ],
)
def test_writing_statements_are_refused_by_the_database(
    imgvec, camera_library: Path, statement: str
) -> None:
    result = imgvec("sql", statement)
    assert result.exit_code == 2
    refusals = (
        "only reading statements run here",
        "readonly database",
        "read-only transaction",
        "one statement at a time",
        "multiple commands",
    )
    assert any(reason in result.stderr for reason in refusals), result.stderr
    assert imgvec("sql", "SELECT count(*) AS n FROM images", "--json").json() == [{"n": 12}]
    # ...and the library still writes normally afterwards (the pooled connection was reset).
    assert imgvec("remove", camera_library / "other" / "c01.jpg").exit_code == 0


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    "statement",
    [
        "ATTACH DATABASE '{out}' AS x",
        "VACUUM INTO '{out}'",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
    ],
)
def test_no_statement_makes_a_file_or_sets_a_pragma(
    imgvec, camera_library: Path, tmp_path: Path, statement: str
) -> None:
    out = tmp_path / "elsewhere.db"
    result = imgvec("sql", statement.format(out=out))
    assert result.exit_code == 2 and "only reading statements run here" in result.stderr
    assert not out.exists()
    listed = imgvec("sql", "PRAGMA database_list", "--json").json()  # reading pragmas still work
    assert [row["name"] for row in listed] == ["main"]
    assert imgvec("sql", "PRAGMA table_info(photos)", "--json").json()[0]["name"] == "id"


@pytest.mark.databases
def test_a_time_limit_stops_a_runaway_statement(camera_library: Path) -> None:
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    with Library.open(create=False) as lib:
        lib.limit_sql(0.3)
        with pytest.raises(ImgvecError, match=r"ran longer than 0.3 s and was stopped"):
            lib.sql(endless)
        assert lib.sql("SELECT count(*) FROM photos").rows == [(12,)]  # the connection is fine
        with pytest.raises(ImgvecError, match=r"ran longer than 0.3 s"):
            lib.query([camera_library / "other" / "c01.jpg"], where=f"id = ({endless})")


def test_bad_sql_is_a_one_line_error(imgvec, camera_library: Path) -> None:
    result = imgvec("sql", "SELEC nothing")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "syntax error" in result.stderr
    assert imgvec("sql", "SELECT 1; SELECT 2").exit_code == 2  # one statement at a time


def test_selective_filter_searches_only_the_matches(imgvec, camera_library: Path) -> None:
    query = camera_library / "other" / "c01.jpg"
    result = imgvec("query", query, "-k", "3", "--where", "camera_make = 'Canon'", "--json")
    assert result.exit_code == 0, result.stderr
    answer = result.json()[0]
    assert answer["filter"] == {"where": "camera_make = 'Canon'", "matches": 4, "strategy": "exact"}
    assert len(answer["results"]) == 3
    assert all("/canon/" in hit["path"] for hit in answer["results"])
    scores = [hit["score"] for hit in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    # k larger than the matches: all of them, no padding.
    everything = imgvec(
        "query", query, "-k", "10", "--where", "camera_make = 'Canon'", "--json"
    ).json()[0]["results"]
    assert len(everything) == 4


def test_broad_filter_overfetches_and_still_returns_k(
    imgvec, camera_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = camera_library / "canon" / "c00.jpg"
    with monkeypatch.context() as patch:
        patch.setattr(rules, "FLAT_MAX_VECTORS", 2)  # every filter counts as broad
        broad = imgvec("query", query, "-k", "5", "--where", "camera_make = 'Nikon'", "--json")
    assert broad.exit_code == 0, broad.stderr
    answer = broad.json()[0]
    assert answer["filter"]["strategy"] == "overfetch"
    assert answer["filter"]["fetched"] >= 5
    assert len(answer["results"]) == 5
    assert all("/other/" in hit["path"] for hit in answer["results"])
    # The same answer as the exact strategy gives.
    exact_run = imgvec("query", query, "-k", "5", "--where", "camera_make = 'Nikon'", "--json")
    assert exact_run.exit_code == 0, exact_run.stderr
    exact = exact_run.json()[0]
    assert exact["filter"]["strategy"] == "exact"
    assert [h["id"] for h in exact["results"]] == [h["id"] for h in answer["results"]]


def test_filter_that_matches_nothing_and_bad_filters(imgvec, camera_library: Path) -> None:
    query = camera_library / "canon" / "c00.jpg"
    none = imgvec("query", query, "--where", "camera_make = 'Leica'", "--json")
    assert none.exit_code == 0 and none.json()[0]["results"] == []
    bad = imgvec("query", query, "--where", "no_such_column = 1")
    assert bad.exit_code == 2
    assert "no such column" in bad.stderr or 'column "no_such_column" does not exist' in bad.stderr
    for command in (("query", query), ("dupes",)):
        empty = imgvec(*command, "--where", " ")
        assert empty.exit_code == 2
        assert empty.stderr.splitlines()[-1].startswith("error: --where needs a condition")


def test_python_api_offers_sessions_and_filtered_queries(
    camera_library: Path, library: Path
) -> None:
    from sqlalchemy import func, select

    from imgvec.storage.schema import Image as ImageRow

    with Library.open(library) as lib:
        with lib.session() as session:
            assert session.scalar(select(func.count()).where(ImageRow.camera_make == "Canon")) == 4
        [result] = lib.query(
            [camera_library / "canon" / "c03.jpg"], k=2, where="taken_at >= '2024-05-01'"
        )
        assert result.filter is not None and result.filter["strategy"] == "exact"
        assert len(result.hits) == 2
        assert lib.sql("SELECT count(*) FROM photos").rows == [(12,)]


def test_backfill_reads_metadata_of_older_rows(imgvec, camera_library: Path, library: Path) -> None:
    from sqlalchemy import update

    from imgvec.storage.schema import Image as ImageRow

    with Library.open(library) as lib, lib.session() as session, session.begin():
        session.execute(
            update(ImageRow).values(metadata_at=None, camera_make=None, taken_at=None, width=None)
        )
    assert imgvec("sql", "SELECT count(camera_make) AS n FROM photos", "--json").json() == [
        {"n": 0}
    ]
    result = imgvec("backfill", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json() == {"updated": 12, "errors": []}
    rows = imgvec(
        "sql",
        "SELECT count(camera_make) AS makes, count(taken_at) AS times, min(width) AS w FROM photos",
        "--json",
    ).json()
    assert rows == [{"makes": 12, "times": 12, "w": 96}]
    assert imgvec("backfill", "--json").json()["updated"] == 0  # nothing left to do
