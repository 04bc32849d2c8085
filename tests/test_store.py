"""Results store: schema, idempotent writes, exports, single-writer lock."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from speechqe.errors import ConfigError, StoreError
from speechqe.manifest import AudioItem
from speechqe.store import RESULT_COLUMNS, ScoreRecord, Store


def _rec(key, metric, value, status="ok", **kw):
    return ScoreRecord(input_key=key, metric=metric, metric_version="1", model_id="default",
                       scorer=metric, sha256=key, value=value, status=status, **kw)


def _run(store, items):
    run_id = store.start_run(name="t", source="s", suite=None, metrics=[], params={},
                             code_version="x", n_items=len(items))
    store.add_items(run_id, items)
    store.link(run_id, [(it.id, "m", it.sha256, "1", "default") for it in items])
    return run_id


def test_write_is_idempotent_and_results_join(tmp_path):
    items = [AudioItem(id=f"u{k}", path=f"/x/u{k}.wav", system="A", sha256=f"h{k}") for k in range(3)]
    with Store(tmp_path / "s.duckdb") as st:
        rid = _run(st, items)
        st.write(rid, [_rec("h0", "m", 1.5), _rec("h1", "m", None, "error", error_type="silent",
                                                   error="audio is silent")],
                 {"u0": "clipped: 1% of samples"})
        st.write(rid, [_rec("h0", "m", 99.0)])  # same key: ignored, first record wins
        assert st.existing("m", "1", "default") == {"h0", "h1"}
        assert st.existing("m", "1", "default", ok_only=True) == {"h0"}
        st.finish_run(rid, "finished")
        res = st.results(rid)
        assert [r["item_id"] for r in res] == ["u0", "u1"]
        assert res[0]["value"] == 1.5 and math.isnan(res[1]["value"])
        assert res[1]["status"] == "error" and res[1]["error_type"] == "silent"
        run = st.run("latest")
        assert run["status"] == "finished" and run["n_records"] == 2 and run["n_errors"] == 1
        assert st.items(rid)[0]["warnings"].startswith("clipped")
        st.write(rid, [_rec("h1", "m", 2.0)], replace=True)
        assert st.existing("m", "1", "default", ok_only=True) == {"h0", "h1"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_exports(tmp_path, suffix):
    import duckdb

    items = [AudioItem(id="u0", path="/x/u0.wav", system="A", sha256="h0"),
             AudioItem(id="u1", path="/x/u1.wav", system="B", sha256="h1")]
    with Store(tmp_path / "s.duckdb") as st:
        rid = _run(st, items)
        st.write(rid, [_rec("h0", "m", 0.25, extra={"n": 3}),
                       _rec("h1", "m", None, "error", error_type="x", error="bad, \"quoted\"")])
        out = st.export(rid, tmp_path / f"o{suffix}")
    reader = {".csv": "read_csv_auto", ".parquet": "read_parquet", ".jsonl": "read_json_auto"}[suffix]
    rows = duckdb.sql(f"SELECT * FROM {reader}('{out}') ORDER BY item_id").fetchall()
    cols = duckdb.sql(f"SELECT * FROM {reader}('{out}')").columns
    assert tuple(cols) == RESULT_COLUMNS
    d = [dict(zip(cols, r)) for r in rows]
    assert d[0]["value"] == 0.25 and json.loads(d[0]["extra"]) == {"n": 3}
    assert d[1]["value"] is None and d[1]["status"] == "error" and d[1]["error"] == 'bad, "quoted"'


def test_bad_export_suffix_and_unknown_run(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        with pytest.raises(ConfigError, match="holds no runs"):
            st.run()
        rid = _run(st, [])
        with pytest.raises(ConfigError, match="must end in"):
            st.export(rid, tmp_path / "x.xlsx")
        with pytest.raises(ConfigError, match="no run"):
            st.run("nope")


def test_second_writer_gets_a_clear_error(tmp_path):
    db = tmp_path / "s.duckdb"
    with Store(db):
        code = (
            "import sys\nfrom speechqe.store import Store\nfrom speechqe.errors import StoreError\n"
            f"try:\n    Store({str(db)!r})\nexcept StoreError as e:\n    print(e); sys.exit(3)\n"
        )
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 3 and "in use by another process" in p.stdout


def test_read_only_on_missing_file(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "none.duckdb", read_only=True)


# Version 1 of the schema, as released, to test the in-place upgrade.
_V1_RUNS = """CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, name VARCHAR, started_at TIMESTAMP,
    finished_at TIMESTAMP, status VARCHAR, source VARCHAR, suite VARCHAR, metrics VARCHAR,
    params VARCHAR, code_version VARCHAR, host VARCHAR, n_items INTEGER, n_records INTEGER,
    n_errors INTEGER, n_reused INTEGER)"""


def test_schema_1_store_is_read_as_is_and_upgraded_on_write(tmp_path):
    import duckdb

    from speechqe import store as store_mod

    db = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute(_V1_RUNS)
    for ddl in store_mod._DDL[2:]:
        con.execute(ddl)
    con.execute("INSERT INTO runs VALUES ('r1', 'old', now(), now(), 'finished', 's', NULL, "
                "'[]', '{}', '0.0.1', 'h', 0, 0, 0, 0)")
    con.close()
    with Store(db, read_only=True) as st:  # read-only: no upgrade, new columns read as None
        assert st.schema_version == 1
        old = st.run("r1")
        assert old["name"] == "old" and old["assets"] is None and old["set_hash"] is None
    with Store(db) as st:
        assert st.schema_version == store_mod.SCHEMA_VERSION == 2
        assert st.run("r1")["status"] == "finished"
        rid = st.start_run(name="new", source="s", suite=None, metrics=[], params={},
                           code_version="x", n_items=0, assets={"a": {"fingerprint": "f"}},
                           set_hash="abc", flow_run_id="fr")
        st.finish_run(rid, "failed", error="boom")
        r = st.run(rid)
        assert json.loads(r["assets"]) == {"a": {"fingerprint": "f"}}
        assert (r["set_hash"], r["flow_run_id"], r["error"]) == ("abc", "fr", "boom")
        assert [x["run_id"] for x in st.runs(name="old")] == ["r1"]
    with Store(db, read_only=True) as st:
        assert st.schema_version == 2


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        st.con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this speechqe"):
        Store(db)
    with pytest.raises(StoreError, match="unknown store schema"):
        Store(db, read_only=True)


def test_failed_run_before_scoring_is_recorded(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        rid = st.record_failed_run(name="nightly", source="/nope", suite="default", params={},
                                   code_version="x", error="no such folder")
        r = st.run(rid)
    assert (r["status"], r["error"], r["n_items"]) == ("failed", "no such folder", 0)


def test_wide_rows_one_line_per_item_errors_and_unscored(tmp_path):
    items = [AudioItem(id="u0", path="/x/u0.wav", system="A", sha256="h0"),
             AudioItem(id="u1", path="/x/u1.wav", system="A", sha256="h1"),
             AudioItem(id="u2", path="/x/u2.wav", system="B", sha256="h2")]
    with Store(tmp_path / "s.duckdb") as st:
        rid = st.start_run(name="t", source="s", suite=None, params={}, code_version="x",
                           n_items=3, metrics=[{"name": "m", "version": "1", "model_id": "default",
                                                "outputs": ["m"]}])
        st.add_items(rid, items)
        st.link(rid, [(it.id, "m", it.sha256, "1", "default") for it in items[:2]])
        st.write(rid, [_rec("h0", "m", 0.5),
                       _rec("h1", "m", float("nan"), "error", error_type="silent", error="quiet")])
        st.finish_run(rid, "interrupted")
        rows = list(st.wide_rows(rid))
        path = st.export(rid, tmp_path / "w.jsonl", layout="wide")
        with pytest.raises(ConfigError, match="--layout wide writes JSONL"):
            st.export(rid, tmp_path / "w.csv", layout="wide")
    assert rows[0] == {"key": "u0", "system": "A", "path": "/x/u0.wav", "m": 0.5, "errors": {}}
    assert rows[1]["m"] is None and rows[1]["errors"] == {"m": {"type": "silent", "message": "quiet"}}
    assert rows[2]["m"] is None and rows[2]["errors"]["m"]["type"] == "not_scored"
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["u0", "u1", "u2"]
    assert "NaN" not in path.read_text()
