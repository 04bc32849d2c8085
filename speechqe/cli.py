"""The ``speechqe`` command line (typer + rich).

Module-level imports stay light (no torch, no prefect): ``speechqe --help`` must be instant.
Each room adds its commands as a typer sub-app defined in its own ``cli`` module.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, SpeechQEError

app = typer.Typer(
    name="speechqe",
    help="Speech quality and speech synthesis evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Off a terminal (logs, CI, pipes) tables get room instead of rich's default 80 columns.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

DEFAULT_OUT_DIR = Path("speechqe-out")


def _fail(exc: Exception, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _apply_asset_overrides(assets: List[str] | None) -> None:
    from . import assets as asset_registry

    for spec in assets or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--asset takes NAME=PATH (got {spec!r})")
        asset_registry.set_override(name.strip(), path.strip())


def _parse_params(values: List[str] | None) -> dict[str, dict[str, Any]]:
    """``--param mcd.align=none`` -> ``{'mcd': {'align': 'none'}}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for v in values or []:
        key, sep, raw = v.partition("=")
        metric, dot, pname = key.partition(".")
        if not sep or not dot or not metric or not pname:
            raise ConfigError(f"--param takes METRIC.NAME=VALUE (got {v!r})")
        out.setdefault(metric.strip(), {})[pname.strip()] = yaml.safe_load(raw)
    return out


# ------------------------------------------------------------------------------------------
# score
# ------------------------------------------------------------------------------------------
@app.command()
def score(
    path: Path = typer.Argument(..., help="A folder of audio (recursive), a .jsonl manifest or a SHEET/MOS-Bench .csv."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Folder of reference audio, matched by relative path, then by stem."),
    text: Optional[Path] = typer.Option(None, "--text", help="Transcripts: 'id<TAB>text' lines."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Suite name (see 'speechqe suites') or a .yaml path. Default: 'default'."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics, e.g. pesq,stoi or mos_ensemble:BUNDLE (overrides --suite)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write long-format results to FILE.csv, .parquet or .jsonl."),
    db: Optional[Path] = typer.Option(None, "--db", help=f"Results store (DuckDB). Default: {DEFAULT_OUT_DIR}/speechqe.duckdb."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes scoring in parallel."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Metric parameter METRIC.NAME=VALUE (repeatable)."),
    asset: Optional[List[str]] = typer.Option(None, "--asset", help="Use a local copy of a pretrained asset: NAME=PATH (repeatable)."),
    system: Optional[str] = typer.Option(None, "--system", help="System name for a flat folder (default: the folder's name)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the speech set's name)."),
    chunk_size: int = typer.Option(16, "--chunk-size", min=1, help="Items per committed chunk / metric batch."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Rescore items whose stored record is an error."),
    progress: str = typer.Option("auto", "--progress", help="auto, bar, plain or none."),
) -> None:
    """Score a speech set and store every result; print a system-by-metric summary."""
    try:
        _score(path, ref, text, suite, metrics, out, db, workers, device, param, asset,
               system, name, chunk_size, retry_errors, progress)
    except SpeechQEError as exc:
        _fail(exc)


def _score(path, ref, text, suite, metrics, out, db, workers, device, param, asset, system,
           name, chunk_size, retry_errors, progress) -> None:
    from . import manifest, runner, suites
    from .store import Store

    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".jsonl"):
        raise ConfigError(f"--out must end in .csv, .parquet or .jsonl (got {out.name})")
    if progress not in ("auto", "bar", "plain", "none"):
        raise ConfigError("--progress must be auto, bar, plain or none")
    if metrics and suite:
        raise ConfigError("give either --suite or --metrics, not both")
    _apply_asset_overrides(asset)
    overrides = _parse_params(param)
    dev = runner.resolve_device(device)
    if metrics:
        entries, suite_name, explicit = suites.entries_from_list(metrics.split(",")), None, True
    else:
        s = suites.load_suite(suite or "default")
        entries, suite_name, explicit = s.entries, s.name, False

    sset = manifest.load_speech_set(path, ref_dir=ref, text_file=text, system=system)
    plan = runner.plan_metrics(entries, sset, explicit=explicit, overrides=overrides)
    info = manifest.summarise(sset)
    console.print(
        f"[bold]{sset.name}[/]: {info['items']} items, {len(info['systems'])} systems, "
        f"{info['hours'] * 60:.1f} min of audio; {info['with_reference']} with reference, "
        f"{info['with_text']} with transcript; header errors: {info['header_errors']}",
        highlight=False,
    )
    for mname, reason in plan.skipped:
        console.print(f"[yellow]skipping {mname}[/]: {reason}", highlight=False)

    db_path = db or DEFAULT_OUT_DIR / "speechqe.duckdb"
    with Store(db_path) as store:
        with _progress_reporter(progress) as report:
            result = runner.score(
                sset, plan.requests, store, device=dev, workers=workers,
                chunk_size=chunk_size, retry_errors=retry_errors, run_name=name,
                suite=suite_name,
                params={"source": str(path), "ref": str(ref) if ref else None,
                        "text": str(text) if text else None, "device": dev,
                        "workers": workers, "metrics": [r.ref for r in plan.requests]},
                progress=report,
            )
        records = store.results(result.run_id)
        if out is not None:
            store.export(result.run_id, out)
    print_summary(records, result.run_id, db_path, reused=result.n_reused_items)
    if out is not None:
        console.print(f"results written to {out}", highlight=False)


class _progress_reporter:
    """Context manager giving a progress callback: a rich bar on a terminal, plain lines in
    logs (one per committed chunk, so a log shows how far a killed run got)."""

    def __init__(self, mode: str):
        if mode == "auto":
            mode = "bar" if err_console.is_terminal else "plain"
        self.mode = mode
        self._bar = None
        self._task = None

    def __enter__(self):
        if self.mode == "bar":
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(
                TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[errors]} errors"), TimeRemainingColumn(),
                console=err_console, transient=True,
            )
            self._bar.__enter__()
        return self._callback

    def _callback(self, p) -> None:
        if self.mode == "bar":
            if self._task is None:
                self._task = self._bar.add_task("score", total=p.total_items, errors=0)
            self._bar.update(self._task, completed=p.done_items, errors=p.errors)
        elif self.mode == "plain":
            print(
                f"scored {p.done_items}/{p.total_items} items "
                f"({p.reused_items} reused, {p.records} new records, {p.errors} errors)",
                file=sys.stderr, flush=True,
            )

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def print_summary(records: list[dict], run_id: str, db_path: Path, reused: int = 0) -> None:
    """System-by-metric table: mean [95% CI] per cell, error counts, directions."""
    from .aggregate import aggregate
    from speechqe.metrics.registry import output_specs

    specs = output_specs()
    aggs = aggregate(records, specs)
    systems = sorted({a.system for a in aggs if a.system != "ALL"})
    cols = systems + (["ALL"] if len(systems) > 1 else [])
    metrics_in_order = list(dict.fromkeys(a.metric for a in aggs))
    table = Table(title=f"run {run_id}", show_lines=False)
    table.add_column("metric", style="bold")
    for s in cols:
        table.add_column(s, justify="right")
    by_key = {(a.system, a.metric): a for a in aggs}
    for m in metrics_in_order:
        spec = specs.get(m)
        arrow = "" if spec is None or spec.higher_is_better is None else (
            " ↑" if spec.higher_is_better else " ↓")
        label = m + arrow + (" (corpus)" if spec is not None and spec.aggregation == "ratio" else "")
        row = [label]
        for s in cols:
            a = by_key.get((s, m))
            if a is None:
                row.append("")
                continue
            cell = f"{_fmt(a.mean)} [{_fmt(a.ci_low)}, {_fmt(a.ci_high)}]" if a.n else "-"
            if a.n_errors:
                cell += f" [red]({a.n_errors} err)[/]"
            row.append(cell)
        table.add_row(*row)
    console.print(table)
    n_err = sum(1 for r in records if r["status"] == "error")
    err_items = len({r["item_id"] for r in records if r["status"] == "error"})
    console.print(
        f"{len(records)} records ({n_err} errors on {err_items} items); "
        f"{reused} items reused from the store; store: {db_path}",
        highlight=False,
    )
    if n_err:
        reasons: dict[str, int] = {}
        for r in records:
            if r["status"] == "error":
                reasons[r["error_type"]] = reasons.get(r["error_type"], 0) + 1
        console.print(
            "errors by reason: " + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())),
            highlight=False,
        )


# ------------------------------------------------------------------------------------------
# Inspection commands
# ------------------------------------------------------------------------------------------
@app.command("metrics")
def list_metrics(
    as_json: bool = typer.Option(False, "--json", help="Print the contracts as JSON."),
) -> None:
    """List every metric with its contract."""
    import dataclasses

    from speechqe.metrics.registry import available

    metrics = available()
    if as_json:
        out = {n: dataclasses.asdict(c.spec) for n, c in metrics.items()}
        console.print_json(json.dumps(out, default=str))
        return
    table = Table(title="metrics")
    for col in ("metric", "outputs", "rate", "needs", "direction", "range", "aggregation",
                "device", "batched", "version", "extra"):
        table.add_column(col)
    for n, cls in metrics.items():
        s = cls.spec
        needs = ", ".join(x for x, f in (("reference", s.needs_reference), ("text", s.needs_text)) if f) or "-"
        dirs = ", ".join("↑" if o.higher_is_better else ("↓" if o.higher_is_better is False else "·") for o in s.outputs)
        ranges = ", ".join(f"[{_b(o.valid_range[0])}, {_b(o.valid_range[1], upper=True)}]" for o in s.outputs)
        aggs = ", ".join(o.aggregation for o in s.outputs)
        table.add_row(
            n, ", ".join(s.output_names), f"{s.sample_rate or 'native'}", needs, dirs, ranges,
            aggs, s.device, "yes" if s.batched else "no", s.version, s.extra or "-",
        )
    console.print(table)


def _b(x, upper: bool = False) -> str:
    return ("inf" if upper else "-inf") if x is None else f"{x:g}"


@app.command("suites")
def list_suites() -> None:
    """List the scoring suites and their metrics."""
    from .suites import available_suites, load_suite

    for name in available_suites():
        s = load_suite(name)
        console.print(f"[bold]{s.name}[/]: {s.description}", highlight=False)
        console.print("  " + ", ".join(e.ref for e in s.entries), highlight=False)


@app.command("manifest")
def build_manifest(
    path: Path = typer.Argument(..., help="Folder, .jsonl or SHEET .csv."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the JSONL manifest."),
    ref: Optional[Path] = typer.Option(None, "--ref"),
    text: Optional[Path] = typer.Option(None, "--text"),
    system: Optional[str] = typer.Option(None, "--system"),
) -> None:
    """Build a speech-set manifest (headers and content hashes only) and write it as JSONL."""
    from . import manifest

    try:
        sset = manifest.load_speech_set(path, ref_dir=ref, text_file=text, system=system)
    except SpeechQEError as exc:
        _fail(exc)
    sset.to_jsonl(output)
    console.print_json(json.dumps(manifest.summarise(sset)))


@app.command("runs")
def list_runs(db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db")) -> None:
    """List the runs in a results store."""
    from .store import Store

    try:
        with Store(db, read_only=True) as store:
            runs = store.runs()
    except SpeechQEError as exc:
        _fail(exc)
    table = Table(title=str(db))
    for col in ("run_id", "name", "status", "started", "items", "records", "errors", "reused", "suite"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r["run_id"], r["name"] or "", r["status"], str(r["started_at"])[:19],
            str(r["n_items"]), str(r["n_records"]), str(r["n_errors"]), str(r["n_reused"]),
            r["suite"] or "-",
        )
    console.print(table)


@app.command("summary")
def summary(
    run: str = typer.Argument("latest", help="Run id (or a unique prefix), or 'latest'."),
    db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db"),
) -> None:
    """Print the system-by-metric summary of a stored run."""
    from .store import Store

    try:
        with Store(db, read_only=True) as store:
            r = store.run(run)
            records = store.results(r["run_id"])
    except SpeechQEError as exc:
        _fail(exc)
    print_summary(records, r["run_id"], db, reused=r["n_reused"] or 0)


@app.command("export")
def export(
    out: Path = typer.Argument(..., help="FILE.csv, .parquet or .jsonl"),
    run: str = typer.Option("latest", "--run"),
    db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db"),
) -> None:
    """Export a stored run's long-format results."""
    from .store import Store

    try:
        with Store(db, read_only=True) as store:
            r = store.run(run)
            store.export(r["run_id"], out)
    except SpeechQEError as exc:
        _fail(exc)
    console.print(f"run {r['run_id']} written to {out}", highlight=False)


from .assets_cli import app as _models_app  # noqa: E402  (sub-app: speechqe models ...)

app.add_typer(_models_app, name="models")

# ------------------------------------------------------------------------------------------
# Orchestration, history and reports (speechqe/report/cli.py, flows/cli.py): evaluate, serve,
# report, compare, dashboard; merged at the top level.
# ------------------------------------------------------------------------------------------
from .report.cli import app as _report_app  # noqa: E402
from speechqe.flows.cli import app as _flows_app  # noqa: E402

app.add_typer(_report_app)
app.add_typer(_flows_app)

from speechqe.predictors.cli import app as _mos_app  # noqa: E402  (light: typer + rich only)

app.add_typer(_mos_app, name="mos")

# Rooms' sub-apps (their modules import nothing heavy at module level).
from speechqe.vocoders.cli import resynth as _resynth, units_app as _units_app  # noqa: E402

app.add_typer(_units_app, name="units")
app.command("resynth")(_resynth)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
