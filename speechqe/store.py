"""The results store: an embedded DuckDB file.

Tables (schema version 2):

``runs``
    One row per scoring run: id, name, times, status (``running``/``finished``/
    ``interrupted``/``failed``), source, suite, the metric list with versions and model ids,
    parameters, code version, host, counts; since version 2 also the pretrained assets the
    metrics loaded (name -> fingerprint of their sha256s), the speech set's content hash, the
    Prefect flow run that produced it and, for failed runs, the reason.
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

Records are committed in batches as they are produced (every few seconds), each with the
``run_scores`` rows that attach it to the run; DuckDB's write-ahead log makes each committed
batch durable, so a killed run loses at most the batch in flight, and a rerun skips every record
already stored (``Store.existing``). A run is linked at its start only to the records it reuses,
so an interrupted run's results are what it had when it stopped, never what a later run added.

Only one process can open a DuckDB file for writing; a second gets a clear ``StoreError``.

Migrations: a store written by an older schema is upgraded in place when opened for writing
(:data:`MIGRATIONS`); opened read-only it is read as it is (missing run columns read as
``None``).
"""

from __future__ import annotations

import json
import math
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import ConfigError, StoreError
from .manifest import AudioItem

SCHEMA_VERSION = 2

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
        n_reused INTEGER,
        assets VARCHAR,
        set_hash VARCHAR,
        flow_run_id VARCHAR,
        error VARCHAR
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

#: Schema upgrades: ``MIGRATIONS[v]`` takes a store from version ``v`` to ``v + 1``.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE runs ADD COLUMN assets VARCHAR",
        "ALTER TABLE runs ADD COLUMN set_hash VARCHAR",
        "ALTER TABLE runs ADD COLUMN flow_run_id VARCHAR",
        "ALTER TABLE runs ADD COLUMN error VARCHAR",
    ),
}

#: Run columns added after version 1 (``None`` when reading an older store).
_RUN_COLUMNS_V2 = ("assets", "set_hash", "flow_run_id", "error")

#: Layouts of exported results: one row per item and output, or one line per item.
LAYOUTS = ("long", "wide")

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


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C during a query: DuckDB checks Python's signals itself and raises its own error
    ("Query interrupted"); make it the ``KeyboardInterrupt`` it stands for, so that the run is
    recorded as interrupted, not failed."""
    import duckdb

    try:
        yield
    except (duckdb.InterruptException, RuntimeError) as exc:
        if isinstance(exc, duckdb.InterruptException) or "interrupted" in str(exc).lower():
            raise KeyboardInterrupt(str(exc)) from exc
        raise


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
        self.con.execute(_DDL[0])
        row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            for ddl in _DDL[1:]:
                self.con.execute(ddl)
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            self.schema_version = SCHEMA_VERSION
            return
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}, newer than this speechqe's "
                f"{SCHEMA_VERSION}: upgrade speechqe"
            )
        if version < SCHEMA_VERSION:
            self.con.execute("BEGIN TRANSACTION")
            try:
                for v in range(version, SCHEMA_VERSION):
                    for stmt in MIGRATIONS[v]:
                        self.con.execute(stmt)
                self.con.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
                )
                self.con.execute("COMMIT")
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
        self.schema_version = SCHEMA_VERSION

    def _check_schema(self) -> None:
        try:
            row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except Exception as exc:
            raise StoreError(f"{self.path} is not a speechqe results store") from exc
        if row is None or not 1 <= int(row[0]) <= SCHEMA_VERSION:
            raise StoreError(f"{self.path} has an unknown store schema")
        self.schema_version = int(row[0])

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
        assets: dict[str, Any] | None = None,
        set_hash: str | None = None,
        flow_run_id: str | None = None,
    ) -> str:
        """Record a new run (status ``running``) and return its id.

        Args:
            assets: pretrained assets the metrics loaded: name -> ``{fingerprint, source}``.
            set_hash: :meth:`SpeechSet.content_hash` of the scored set.
            flow_run_id: the Prefect flow run, when a flow started it.
        """
        run_id = run_id or (_now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
        self.con.execute(
            """INSERT INTO runs (run_id, name, started_at, finished_at, status, source, suite,
                 metrics, params, code_version, host, n_items, n_records, n_errors, n_reused,
                 assets, set_hash, flow_run_id)
               VALUES (?, ?, ?, NULL, 'running', ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?)""",
            [
                run_id, name, _now(), source, suite, json.dumps(list(metrics)),
                json.dumps(params, default=str), code_version, socket.gethostname(), n_items,
                json.dumps(assets or {}, sort_keys=True), set_hash, flow_run_id,
            ],
        )
        return run_id

    def record_failed_run(
        self, *, name: str, source: str, suite: str | None, params: dict[str, Any],
        code_version: str, error: str, flow_run_id: str | None = None,
    ) -> str:
        """Record a run that failed before it could start scoring (e.g. an unreadable source),
        so that the history shows it."""
        run_id = self.start_run(
            name=name, source=source, suite=suite, metrics=[], params=params,
            code_version=code_version, n_items=0, flow_run_id=flow_run_id,
        )
        self.finish_run(run_id, "failed", error=error)
        return run_id

    def finish_run(
        self, run_id: str, status: str, *, n_reused: int = 0, error: str | None = None
    ) -> None:
        with _interruptible():
            self._finish_run(run_id, status, n_reused, error)

    def _finish_run(self, run_id: str, status: str, n_reused: int, error: str | None) -> None:
        n_records, n_errors = self.con.execute(
            """SELECT count(*), count(*) FILTER (WHERE s.status = 'error')
               FROM run_scores r JOIN scores s ON s.input_key = r.input_key AND s.scorer = r.scorer
                 AND s.metric_version = r.metric_version AND s.model_id = r.model_id
               WHERE r.run_id = ?""",
            [run_id],
        ).fetchone()
        self.con.execute(
            """UPDATE runs SET finished_at = ?, status = ?, n_records = ?, n_errors = ?,
               n_reused = ?, error = ? WHERE run_id = ?""",
            [_now(), status, n_records, n_errors, n_reused, error, run_id],
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
        links: Iterable[tuple[str, str, str, str, str]] = (),
    ) -> None:
        """Commit a batch of records, item warnings and the links that attach the records to
        the run's items (rows of ``(item_id, scorer, input_key, version, model_id)``, as
        :meth:`link`) in one transaction: a run's results are exactly what it had committed
        (or reused) when it ended, whatever later runs add."""
        now = _now()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with _interruptible():
            self.con.execute("BEGIN TRANSACTION")
            try:
                _bulk_insert(self.con, f"{verb} INTO scores",
                             [r.row(run_id, now) for r in records])
                _bulk_insert(self.con, "INSERT OR IGNORE INTO run_scores",
                             [(run_id, *r) for r in links])
                for item_id, text in (warnings or {}).items():
                    self.con.execute(
                        "UPDATE items SET warnings = ? WHERE run_id = ? AND item_id = ?",
                        [text, run_id, item_id],
                    )
                self.con.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Roll back the open transaction, if any: a Ctrl-C may land just after COMMIT
        returned, and the original error is the one to report."""
        try:
            self.con.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction active
            pass

    # --- queries ----------------------------------------------------------------------------
    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        """All runs (or those named ``name``), oldest first. ``metrics``, ``params`` and
        ``assets`` stay JSON text."""
        q = "SELECT * FROM runs" + (" WHERE name = ?" if name is not None else "")
        cur = self.con.execute(q + " ORDER BY started_at, run_id", [name] if name is not None else [])
        cols = [d[0] for d in cur.description]
        out = []
        for r in cur.fetchall():
            d = dict(zip(cols, r))
            for c in _RUN_COLUMNS_V2:
                d.setdefault(c, None)
            out.append(d)
        return out

    def run(self, run_id: str | None = None) -> dict[str, Any]:
        """A run by id or unique id prefix, or the latest run when ``run_id`` is ``None`` or
        ``'latest'``.

        Raises:
            ConfigError: no such run, or a prefix that several runs share (they are listed).
        """
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
        if matches:
            shown = "; ".join(f"{r['run_id']} ({r['name'] or '-'}, {r['status']}, "
                              f"{str(r['started_at'])[:19]})" for r in matches[-10:])
            more = f" (the latest 10 of {len(matches)})" if len(matches) > 10 else ""
            raise ConfigError(f"'{run_id}' matches {len(matches)} runs in {self.path}{more}: "
                              f"{shown}; give more of the run id")
        raise ConfigError(f"no run '{run_id}' in {self.path} (see 'speechqe runs')")

    def _results_sql(self, own_only: bool = False) -> str:
        # A run links the records it reused at its start and those it computes as they are
        # committed. Runs written before that linked all their planned records at the start,
        # so one that stopped early may show records a later run computed: ``own_only`` keeps
        # what the run itself computed and what was stored before it started.
        own = ("""AND (s.run_id = r.run_id
                 OR s.created_at <= (SELECT started_at FROM runs WHERE runs.run_id = r.run_id))"""
               if own_only else "")
        return f"""
            SELECT r.run_id, r.item_id, i.system, s.metric, s.value, s.status, s.error,
                   s.error_type, s.scorer, s.metric_version, s.model_id, i.path, i.sha256, s.extra
            FROM run_scores r
            JOIN items i ON i.run_id = r.run_id AND i.item_id = r.item_id
            JOIN scores s ON s.input_key = r.input_key AND s.scorer = r.scorer
                 AND s.metric_version = r.metric_version AND s.model_id = r.model_id
            WHERE r.run_id = ? {own}
            ORDER BY i.system, r.item_id, s.metric
        """

    def results_fingerprint(self, run_id: str) -> tuple:
        """Changes whenever a run's results change (records, errors, latest write), for
        caching derived data such as aggregates."""
        return tuple(self.con.execute(
            """SELECT count(*), count(*) FILTER (WHERE s.status = 'error'), max(s.created_at)
               FROM run_scores r JOIN scores s ON s.input_key = r.input_key AND s.scorer = r.scorer
                 AND s.metric_version = r.metric_version AND s.model_id = r.model_id
               WHERE r.run_id = ?""",
            [run_id],
        ).fetchone())

    def results(self, run_id: str, *, own_only: bool = False) -> list[dict[str, Any]]:
        """Long-format results of a run (one row per item and metric output).

        Args:
            own_only: only the records the run computed itself or found stored when it
                started; for a run that stopped early (interrupted, killed), whose remaining
                records a later run may have computed since.
        """
        rows = self.con.execute(self._results_sql(own_only), [run_id]).fetchall()
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

    def export(self, run_id: str, path: str | Path, *, layout: str = "long") -> Path:
        """Write a run's results to ``path``.

        ``layout='long'``: one row per item and metric output, as ``.csv``, ``.parquet`` or
        ``.jsonl``; error rows have an empty ``value`` (CSV) / null (Parquet, JSONL): never 0.
        ``layout='wide'``: ``.jsonl`` only, one line per item (:meth:`wide_rows`).
        """
        path = Path(path)
        if layout not in LAYOUTS:
            raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
        if layout == "wide":
            if path.suffix.lower() not in (".jsonl", ".ndjson"):
                raise ConfigError(f"--layout wide writes JSONL: --out must end in .jsonl (got {path.name})")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for row in self.wide_rows(run_id):
                    f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            tmp.replace(path)
            return path
        fmt = {".csv": "(FORMAT CSV, HEADER)", ".parquet": "(FORMAT PARQUET)",
               ".jsonl": "(FORMAT JSON)", ".ndjson": "(FORMAT JSON)"}.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"an export file must end in .csv, .parquet or .jsonl "
                              f"(got {path.name})")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        sql = self._results_sql().replace("?", "'" + run_id.replace("'", "''") + "'")
        self.con.execute(f"COPY ({sql}) TO '{_sql_path(tmp)}' {fmt}")
        tmp.replace(path)
        return path

    def wide_rows(self, run_id: str) -> Iterator[dict[str, Any]]:
        """One dict per item of the run, the shape VERSA writes (one JSON line per utterance):
        ``key`` (the item id), ``system``, ``path``, then one key per metric output of the
        run, then ``errors``.

        A value is a finite number or ``null``; every ``null`` has its reason in ``errors``
        (``{output: {"type": error_type, "message": error}}``), including outputs with no
        record at all (``not_scored``: e.g. an interrupted run). Strict JSON: no NaN or
        Infinity.
        """
        run = self.run(run_id)
        outputs: list[str] = []
        for m in json.loads(run["metrics"] or "[]"):
            outputs += [o for o in m.get("outputs", []) if o not in outputs]
        by_item: dict[str, dict[str, dict[str, Any]]] = {}
        for r in self.results(run["run_id"]):
            by_item.setdefault(r["item_id"], {})[r["metric"]] = r
            if r["metric"] not in outputs:
                outputs.append(r["metric"])
        for it in sorted(self.items(run["run_id"]), key=lambda i: (i["system"] or "", i["item_id"])):
            row: dict[str, Any] = {"key": it["item_id"], "system": it["system"], "path": it["path"]}
            errors: dict[str, dict[str, str]] = {}
            recs = by_item.get(it["item_id"], {})
            for o in outputs:
                r = recs.get(o)
                if r is None:
                    row[o] = None
                    errors[o] = {"type": "not_scored",
                                 "message": "no record for this item in this run (interrupted or failed run?)"}
                elif r["status"] != "ok":
                    row[o] = None
                    errors[o] = {"type": r["error_type"] or "error", "message": r["error"] or ""}
                elif r["value"] is None or not math.isfinite(r["value"]):
                    row[o] = None
                    errors[o] = {"type": "non_finite", "message": f"stored value {r['value']!r}"}
                else:
                    row[o] = float(r["value"])
            row["errors"] = errors
            yield row


def _sql_path(p: Path) -> str:
    return str(p).replace("'", "''")
