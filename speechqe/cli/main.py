"""The ``speechqe`` command line (typer + rich): the root app, ``score`` and the store
inspection commands; the other commands are typer sub-apps of this package (``models``,
``report``, ``flows``, ``mos``, ``vocoders``), mounted at the end of this module.

Module-level imports stay light (no torch, no prefect): ``speechqe --help`` must be instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from speechqe.errors import ConfigError, SpeechQEError

from .common import (
    DEFAULT_OUT_DIR,
    apply_asset_overrides,
    console,
    err_console,
    fail,
    parse_params,
    print_summary,
    progress_reporter,
)

app = typer.Typer(
    name="speechqe",
    help="Speech quality and speech synthesis evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes scoring in parallel. Default: one per CPU core when at least a minute of audio is to be scored, else 1."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Metric parameter METRIC.NAME=VALUE (repeatable)."),
    asset: Optional[List[str]] = typer.Option(None, "--asset", help="Use a local copy of a pretrained asset: NAME=PATH (repeatable)."),
    system: Optional[str] = typer.Option(None, "--system", help="System name for a flat folder (default: the folder's name)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the speech set's name)."),
    chunk_size: int = typer.Option(16, "--chunk-size", min=1, help="Items per committed chunk / metric batch."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Rescore items whose stored record is an error."),
    progress: str = typer.Option("auto", "--progress", help="auto, bar, plain or none."),
    analysis_cache: Optional[str] = typer.Option(None, "--analysis-cache", help="Folder keeping reference analyses (WORLD features, speaker embeddings) for later runs, or 'off'. Default: analysis-cache/ beside the store."),
) -> None:
    """Score a speech set and store every result; print a system-by-metric summary."""
    try:
        _score(path, ref, text, suite, metrics, out, db, workers, device, param, asset,
               system, name, chunk_size, retry_errors, progress, analysis_cache)
    except SpeechQEError as exc:
        fail(exc)


def interrupted(p) -> None:
    """Ctrl-C: say what was kept and how to resume, and exit 130 (128 + SIGINT)."""
    where = ""
    if p is not None:
        where = (f": {p.committed_items} of {p.total_items} items have their results saved"
                 f"{f' (run {p.run_id})' if p.run_id else ''}")
    err_console.print(f"[bold yellow]interrupted[/]{where}; rerun the same command to resume "
                      "(saved results are not computed again)", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _score(path, ref, text, suite, metrics, out, db, workers, device, param, asset, system,
           name, chunk_size, retry_errors, progress, analysis_cache=None) -> None:
    from speechqe import manifest
    from speechqe.devices import is_device_name, resolve_device
    from speechqe.engine.evaluation import EvaluationConfig, Steps, evaluate
    from speechqe.store import Store

    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".jsonl"):
        raise ConfigError(f"--out must end in .csv, .parquet or .jsonl (got {out.name})")
    if progress not in ("auto", "bar", "plain", "none"):
        raise ConfigError("--progress must be auto, bar, plain or none")
    if metrics and suite:
        raise ConfigError("give either --suite or --metrics, not both")
    if not is_device_name(device):
        raise ConfigError(f"--device must be one of auto, cpu, cuda, cuda:N (got {device!r})")
    apply_asset_overrides(asset)
    db_path = db or DEFAULT_OUT_DIR / "speechqe.duckdb"
    cfg = EvaluationConfig.create(
        source=str(path), references=ref, transcripts=text, suite=suite, metrics=metrics,
        store=str(db_path), name=name, system=system, device=device, chunk_size=chunk_size,
        retry_errors=retry_errors, params=parse_params(param), report=False, baseline=None,
        analysis_cache=analysis_cache,
    )
    resolve_device(device)  # a GPU that is not there stops the command before any hashing
    steps = Steps(workers)

    def planned(sset, plan) -> None:
        info = manifest.summarise(sset)
        console.print(
            f"[bold]{sset.name}[/]: {info['items']} items, {len(info['systems'])} systems, "
            f"{info['hours'] * 60:.1f} min of audio; {info['with_reference']} with reference, "
            f"{info['with_text']} with transcript; header errors: {info['header_errors']}",
            highlight=False,
        )
        for mname, reason in plan.skipped:
            console.print(f"[yellow]skipping {mname}[/]: {reason}", highlight=False)

    reporter = progress_reporter(progress)
    try:
        with reporter as report:
            result = evaluate(cfg, steps, on_planned=planned, progress=report)
    except KeyboardInterrupt:
        interrupted(reporter.last)
    with Store(db_path, read_only=True) as store:
        records = store.results(result.run_id)
        if out is not None:
            store.export(result.run_id, out)
    print_summary(records, result.run_id, db_path, reused=result.n_reused_items)
    if out is not None:
        console.print(f"results written to {out}", highlight=False)


# ------------------------------------------------------------------------------------------
# Inspection commands
# ------------------------------------------------------------------------------------------
@app.command("metrics")
def list_metrics(
    as_json: bool = typer.Option(False, "--json", help="Print the contracts as JSON."),
) -> None:
    """List every metric with its contract."""
    import dataclasses

    from speechqe import plugins

    metrics = plugins.available()
    if as_json:
        out = {n: {**dataclasses.asdict(c.spec), "adapter": c.__module__,
                   "registered_by": plugins.origin(n)} for n, c in metrics.items()}
        console.print_json(json.dumps(out, default=str))
        _report_broken_plugins(plugins.broken())
        return
    table = Table(title="metrics")
    for col in ("metric", "outputs", "rate", "needs", "direction", "range", "aggregation",
                "device", "batched", "version", "extra", "adapter", "core"):
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
            cls.__module__, s.core or "-",
        )
    console.print(table)
    _report_broken_plugins(plugins.broken())


def _report_broken_plugins(broken) -> None:
    """A plugin that failed to load is listed with its error, and the listing exits 1."""
    for b in broken:
        err_console.print(f"[bold red]plugin failed to load:[/] {b.source}: {b.error}",
                          highlight=False, soft_wrap=True)
    if broken:
        raise typer.Exit(1)


def _b(x, upper: bool = False) -> str:
    return ("inf" if upper else "-inf") if x is None else f"{x:g}"


@app.command("suites")
def list_suites() -> None:
    """List the scoring suites and their metrics."""
    from speechqe.suites import available_suites, load_suite

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
    from speechqe import manifest

    try:
        sset = manifest.load_speech_set(path, ref_dir=ref, text_file=text, system=system)
    except SpeechQEError as exc:
        fail(exc)
    sset.to_jsonl(output)
    console.print_json(json.dumps(manifest.summarise(sset)))


@app.command("runs")
def list_runs(db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db")) -> None:
    """List the runs in a results store."""
    from speechqe.store import Store

    try:
        with Store(db, read_only=True) as store:
            runs = store.runs()
    except SpeechQEError as exc:
        fail(exc)
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
    from speechqe.store import Store

    try:
        with Store(db, read_only=True) as store:
            r = store.run(run)
            records = store.results(r["run_id"])
            n_done = len({x["item_id"] for x in records})
    except SpeechQEError as exc:
        fail(exc)
    if r["status"] != "finished":
        why = f" ({r['error']})" if r.get("error") else ""
        if r["status"] == "running":
            why = " (or its process was killed)"
        err_console.print(
            f"[bold yellow]run {r['run_id']} is {r['status']}[/]{why}: results for {n_done} of "
            f"{r['n_items']} items; rerun the same command to complete them",
            highlight=False, soft_wrap=True,
        )
    print_summary(records, r["run_id"], db, reused=r["n_reused"] or 0)


@app.command("export")
def export(
    out: Path = typer.Argument(..., help="FILE.csv, .parquet or .jsonl"),
    run: str = typer.Option("latest", "--run"),
    db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db"),
) -> None:
    """Export a stored run's long-format results."""
    from speechqe.store import Store

    try:
        with Store(db, read_only=True) as store:
            r = store.run(run)
            store.export(r["run_id"], out)
    except SpeechQEError as exc:
        fail(exc)
    console.print(f"run {r['run_id']} written to {out}", highlight=False)


from .models import app as _models_app  # noqa: E402  (sub-app: speechqe models ...)

app.add_typer(_models_app, name="models")

# ------------------------------------------------------------------------------------------
# Orchestration, history and reports (speechqe/report/cli.py, flows/cli.py): evaluate, serve,
# report, compare, dashboard; merged at the top level.
# ------------------------------------------------------------------------------------------
from .report import app as _report_app  # noqa: E402
from .flows import app as _flows_app  # noqa: E402

app.add_typer(_report_app)
app.add_typer(_flows_app)

from .mos import app as _mos_app  # noqa: E402  (light: typer + rich only)

app.add_typer(_mos_app, name="mos")

# Rooms' sub-apps (their modules import nothing heavy at module level).
from .vocoders import resynth as _resynth, units_app as _units_app  # noqa: E402

app.add_typer(_units_app, name="units")
app.command("resynth")(_resynth)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
