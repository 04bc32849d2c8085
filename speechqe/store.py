"""The results store: an embedded DuckDB file.

Tables (schema version 1):

``runs``
    One row per scoring run: id, name, times, status (``running``/``finished``/
    ``interrupted``/``failed``), source, suite, the metric list with versions and model ids,
    parameters, code version, host, counts.
``items``
    The items of each run (``run_id, item_id``): system, paths, content hashes, transcript,
    duration, MOS label, validation warnings (e.g. clipping).
``run_scores``
    Which score records belong to which run item: ``(run_id, item_id, scorer)`` ->
    ``(input_key, metric_version, model_id)``. Two runs over the same audio share records.
``scores``
    One record per ``(input_key, metric, metric_version, model_id)`` — the input key is the
    item's content sha256, combined with the reference's hash and the transcript for metrics
    that use them — holding ``value`` (NULL when the status is ``error``), ``status``
    (``ok``/``error``), ``error_type``, ``error``, ``extra`` (JSON text, e.g. F0 voicing counts,
    ASR hypothesis) and the run that produced it.

Records are committed chunk by chunk as they are produced; DuckDB's write-ahead log makes each
committed chunk durable, so a killed run loses at most the chunk in flight, and a rerun skips
every record already stored (``Store.existing``).

Only one process can open a DuckDB file for writing; a second gets a clear ``StoreError``.
"""

from __future__ import annotations

import json
import math
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import ConfigError, StoreError
from .manifest import AudioItem

SCHEMA_VERSION = 1

_DDL = [
    """CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,
        name VARCHAR,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        status VARCHAR,
        source VARCHAR,
        suite VARCHAR,
        metrics VARCHAR,
        params VARCHAR,
        code_version VARCHAR,
        host VARCHAR,
        n_items INTEGER,
        n_records INTEGER,
        n_errors INTEGER,
        n_reused INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS items (
        run_id VARCHAR,
        item_id VARCHAR,
        system VARCHAR,
        path VARCHAR,
        sha256 VARCHAR,
        ref_path VARCHAR,
        ref_sha256 VARCHAR,
        prompt_path VARCHAR,
        text VARCHAR,
        duration DOUBLE,
        sample_rate INTEGER,
        mos DOUBLE,
        header_error VARCHAR,
        warnings VARCHAR,
        PRIMARY KEY (run_id, item_id)
    )""",
    """CREATE TABLE IF NOT EXISTS run_scores (
        run_id VARCHAR,
        item_id VARCHAR,
        scorer VARCHAR,
        input_key VARCHAR,
        metric_version VARCHAR,
        model_id VARCHAR,
        PRIMARY KEY (run_id, item_id, scorer)
    )""",
    """CREATE TABLE IF NOT EXISTS scores (
        input_key VARCHAR,
        metric VARCHAR,
        metric_version VARCHAR,
        model_id VARCHAR,
        scorer VARCHAR,
        sha256 VARCHAR,
        value DOUBLE,
        status VARCHAR,
        error_type VARCHAR,
        error VARCHAR,
        extra VARCHAR,
        run_id VARCHAR,
        created_at TIMESTAMP,
        PRIMARY KEY (input_key, metric, metric_version, model_id)
    )""",
]

#: Columns of the long-format results (``Store.results`` and exports), in order.
RESULT_COLUMNS = (
    "run_id", "item_id", "system", "metric", "value", "status", "error", "error_type",
    "scorer", "metric_version", "model_id", "path", "sha256", "extra",
)


@dataclass
class ScoreRecord:
    """One stored number (or error) for one item and one metric output."""

    input_key: str
    metric: str
    metric_version: str
    model_id: str
    scorer: str
    sha256: str
    value: float | None
    status: str
    error_type: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, run_id: str, now: datetime) -> tuple:
        value = None if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)) else float(self.value)
        return (
            self.input_key, self.metric, self.metric_version, self.model_id, self.scorer,
            self.sha256, value, self.status, self.error_type, self.error,
            json.dumps(self.extra, ensure_ascii=False, default=_json_default) if self.extra else None,
            run_id, now,
        )


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _bulk_insert(con, head: str, rows: Sequence[tuple]) -> None:
    """``head`` (e.g. ``'INSERT OR IGNORE INTO scores'``) with ``rows``, as one statement over
    column lists (``unnest``): ~50x faster than ``executemany`` in DuckDB for thousands of rows."""
    if not rows:
        return
    cols = [list(c) for c in zip(*rows)]
    select = ", ".join(f"unnest(?) AS c{i}" for i in range(len(cols)))
    con.execute(f"{head} SELECT * FROM (SELECT {select})", cols)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """A DuckDB results store. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, read_only: bool = False):
        import duckdb

        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(f"no results store at {self.path}")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            msg = str(exc)
            if "lock" in msg.lower():
                raise StoreError(
                    f"the results store {self.path} is in use by another process "
                    "(DuckDB allows one writer); wait for it or use another --db"
                ) from exc
            raise StoreError(f"cannot open results store {self.path}: {msg}") from exc
        self.read_only = read_only
        if not read_only:
            self._migrate()
        else:
            self._check_schema()

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "con", None) is not None:
            self.con.close()
            self.con = None  # type: ignore[assignment]

    def _migrate(self) -> None:
        for ddl in _DDL:
            self.con.execute(ddl)
        row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {row[0]}; this speechqe writes {SCHEMA_VERSION}"
            )

    def _check_schema(self) -> None:
        try:
            row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except Exception as exc:
            raise StoreError(f"{self.path} is not a speechqe results store") from exc
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has an unknown store schema")

    # --- runs -------------------------------------------------------------------------------
    def start_run(
        self,
        *,
        name: str,
        source: str,
        suite: str | None,
        metrics: Sequence[dict[str, Any]],
        params: dict[str, Any],
        code_version: str,
        n_items: int,
        run_id: str | None = None,
    ) -> str:
        run_id = run_id or (_now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, NULL, 'running', ?, ?, ?, ?, ?, ?, ?, 0, 0, 0)",
            [
                run_id, name, _now(), source, suite, json.dumps(list(metrics)),
                json.dumps(params, default=str), code_version, socket.gethostname(), n_items,
            ],
        )
        return run_id

    def finish_run(self, run_id: str, status: str, *, n_reused: int = 0) -> None:
        n_records, n_errors = self.con.execute(
            """SELECT count(*), count(*) FILTER (WHERE s.status = 'error')
               FROM run_scores r JOIN scores s ON s.input_key = r.input_key AND s.scorer = r.scorer
                 AND s.metric_version = r.metric_version AND s.model_id = r.model_id
               WHERE r.run_id = ?""",
            [run_id],
        ).fetchone()
        self.con.execute(
            """UPDATE runs SET finished_at = ?, status = ?, n_records = ?, n_errors = ?,
               n_reused = ? WHERE run_id = ?""",
            [_now(), status, n_records, n_errors, n_reused, run_id],
        )

    def add_items(self, run_id: str, items: Iterable[AudioItem]) -> None:
        rows = [
            (
                run_id, it.id, it.system, it.path, it.sha256, it.ref_path, it.ref_sha256,
                it.prompt_path, it.text, it.duration, it.sample_rate, it.mos,
                f"{it.error_type}: {it.error}" if it.error else None, None,
            )
            for it in items
        ]
        _bulk_insert(self.con, "INSERT INTO items", rows)

    def link(self, run_id: str, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Attach records to a run: rows of ``(item_id, scorer, input_key, version, model_id)``."""
        _bulk_insert(self.con, "INSERT INTO run_scores", [(run_id, *r) for r in rows])

    def existing(
        self, scorer: str, metric_version: str, model_id: str, *, ok_only: bool = False
    ) -> set[str]:
        """Input keys already scored by this scorer/version/model (any status, or ok only)."""
        q = "SELECT DISTINCT input_key FROM scores WHERE scorer = ? AND metric_version = ? AND model_id = ?"
        if ok_only:
            q += " AND status = 'ok'"
        return {r[0] for r in self.con.execute(q, [scorer, metric_version, model_id]).fetchall()}

    def write(
        self,
        run_id: str,
        records: Sequence[ScoreRecord],
        warnings: dict[str, str] | None = None,
        *,
        replace: bool = False,
    ) -> None:
        """Commit a chunk of records (and item warnings) in one transaction."""
        now = _now()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self.con.execute("BEGIN TRANSACTION")
        try:
            _bulk_insert(self.con, f"{verb} INTO scores", [r.row(run_id, now) for r in records])
            for item_id, text in (warnings or {}).items():
                self.con.execute(
                    "UPDATE items SET warnings = ? WHERE run_id = ? AND item_id = ?",
                    [text, run_id, item_id],
                )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    # --- queries ----------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        cur = self.con.execute("SELECT * FROM runs ORDER BY started_at")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def run(self, run_id: str | None = None) -> dict[str, Any]:
        """A run by id, or the latest run when ``run_id`` is ``None`` or ``'latest'``."""
        runs = self.runs()
        if not runs:
            raise ConfigError(f"{self.path} holds no runs")
        if run_id in (None, "latest"):
            return runs[-1]
        for r in runs:
            if r["run_id"] == run_id:
                return r
        matches = [r for r in runs if r["run_id"].startswith(str(run_id))]
        if len(matches) == 1:
            return matches[0]
        raise ConfigError(f"no run '{run_id}' in {self.path}")

    def _results_sql(self) -> str:
        return """
            SELECT r.run_id, r.item_id, i.system, s.metric, s.value, s.status, s.error,
                   s.error_type, s.scorer, s.metric_version, s.model_id, i.path, i.sha256, s.extra
            FROM run_scores r
            JOIN items i ON i.run_id = r.run_id AND i.item_id = r.item_id
            JOIN scores s ON s.input_key = r.input_key AND s.scorer = r.scorer
                 AND s.metric_version = r.metric_version AND s.model_id = r.model_id
            WHERE r.run_id = ?
            ORDER BY i.system, r.item_id, s.metric
        """

    def results(self, run_id: str) -> list[dict[str, Any]]:
        """Long-format results of a run (one row per item and metric output)."""
        rows = self.con.execute(self._results_sql(), [run_id]).fetchall()
        out = []
        for row in rows:
            d = dict(zip(RESULT_COLUMNS, row))
            d["extra"] = json.loads(d["extra"]) if d["extra"] else {}
            if d["value"] is None:
                d["value"] = math.nan
            out.append(d)
        return out

    def iter_results(self, run_id: str) -> Iterator[dict[str, Any]]:
        yield from self.results(run_id)

    def items(self, run_id: str) -> list[dict[str, Any]]:
        cur = self.con.execute("SELECT * FROM items WHERE run_id = ? ORDER BY item_id", [run_id])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def export(self, run_id: str, path: str | Path) -> Path:
        """Write a run's long-format results to ``.csv``, ``.parquet`` or ``.jsonl``.

        Error rows have an empty ``value`` (CSV) / null (Parquet, JSONL): never 0.
        """
        path = Path(path)
        fmt = {".csv": "(FORMAT CSV, HEADER)", ".parquet": "(FORMAT PARQUET)",
               ".jsonl": "(FORMAT JSON)", ".ndjson": "(FORMAT JSON)"}.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"--out must end in .csv, .parquet or .jsonl (got {path.name})")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        sql = self._results_sql().replace("?", "'" + run_id.replace("'", "''") + "'")
        self.con.execute(f"COPY ({sql}) TO '{_sql_path(tmp)}' {fmt}")
        tmp.replace(path)
        return path


def _sql_path(p: Path) -> str:
    return str(p).replace("'", "''")
