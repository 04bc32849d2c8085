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
    on_interrupt,
    parse_params,
    plain_help_when_narrow,
    print_summary,
    progress_reporter,
    set_debug,
)

app = typer.Typer(
    name="speechqe",
    help="Speech quality and speech synthesis evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    debug: bool = typer.Option(
        False, "--debug",
        help="Show the Python traceback behind an error message (also: SPEECHQE_DEBUG=1).",
    ),
) -> None:
    """Speech quality and speech synthesis evaluation."""
    set_debug(debug)


# ------------------------------------------------------------------------------------------
# score
# ------------------------------------------------------------------------------------------
_SOURCE_HELP = ("A folder of audio (recursive), an audio file, a Kaldi/ESPnet data dir or wav.scp, "
                "a lhotse manifest (.jsonl[.gz]), an audiofolder (metadata.csv/.jsonl), a "
                "speechqe .jsonl manifest or a SHEET/MOS-Bench .csv (see docs/speech-sets.md).")
_REF_HELP = ("Reference audio: a folder (matched by relative path, then by stem), a Kaldi wav.scp "
             "or data dir (matched by utterance id), or one audio file for one input file.")
_TEXT_HELP = "Transcripts: 'id<TAB>text' lines or a Kaldi 'text' file."
_FORMAT_HELP = "Input format: auto (detected), folder, file, jsonl, sheet, kaldi, lhotse or audiofolder."
_PIPES_HELP = "Run the pipe commands of Kaldi wav.scp / lhotse entries ('sox ... |'); refused otherwise."
_ENCODING_HELP = "Encoding of the text files read (transcripts, lists, metadata). Default: utf-8."


@app.command()
def score(
    path: Path = typer.Argument(..., help=_SOURCE_HELP),
    ref: Optional[Path] = typer.Option(None, "--ref", help=_REF_HELP),
    text: Optional[Path] = typer.Option(None, "--text", help=_TEXT_HELP),
    suite: Optional[str] = typer.Option(None, "--suite", help="Suite name (see 'speechqe suites') or a .yaml path; default: 'default' when --metrics is not given."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics instead of a suite (not both), e.g. pesq,stoi or mos_ensemble:BUNDLE; each metric once (score a second bundle in another run and 'speechqe compare' the runs)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the results to FILE.csv, .parquet or .jsonl (see --layout)."),
    db: Optional[Path] = typer.Option(None, "--db", help=f"Results store (DuckDB). Default: {DEFAULT_OUT_DIR}/speechqe.duckdb."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes scoring in parallel. Default: one per CPU core when at least a minute of audio is to be scored, else 1."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (auto: a GPU when torch sees one)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Metric parameter METRIC.NAME=VALUE (repeatable)."),
    asset: Optional[List[str]] = typer.Option(None, "--asset", help="Use a local copy of a pretrained asset: NAME=PATH (repeatable)."),
    system: Optional[str] = typer.Option(None, "--system", help="System name for a flat folder or a list without systems (default: the folder's name)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the speech set's name)."),
    chunk_size: int = typer.Option(16, "--chunk-size", min=1, help="Items per committed chunk / metric batch."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Rescore items whose stored record is an error."),
    progress: str = typer.Option("auto", "--progress", help="auto, bar, plain or none."),
    fmt: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    allow_pipes: bool = typer.Option(False, "--allow-pipes", help=_PIPES_HELP),
    layout: str = typer.Option("long", "--layout", help="--out layout: long (a row per item and output) or wide (.jsonl: a line per item, a key per output, VERSA's shape)."),
    versa_config: Optional[Path] = typer.Option(None, "--versa-config", help="Score the metrics of a VERSA score config (YAML), mapped to speechqe's (see docs/versa.md)."),
    text_encoding: Optional[str] = typer.Option(None, "--text-encoding", help=_ENCODING_HELP),
    analysis_cache: Optional[str] = typer.Option(None, "--analysis-cache", help="Folder keeping reference analyses (WORLD features, speaker embeddings) for later runs, or 'off'. Default: analysis-cache/ beside the store."),
) -> None:
    """Score a speech set and store every result; print a system-by-metric summary."""
    try:
        _score(path, ref, text, suite, metrics, out, db, workers, device, param, asset,
               system, name, chunk_size, retry_errors, progress, fmt, allow_pipes, layout,
               versa_config, text_encoding, analysis_cache)
    except SpeechQEError as exc:
        fail(exc)


def interrupted_hint(p, db_path) -> str:
    """What a Ctrl-C during ``score`` kept and how to resume (printed as ``error: interrupted;
    ...`` with exit status 130 by :func:`speechqe.cli.common.run`)."""
    saved = ""
    if p is not None:
        saved = (f"{p.committed_items} of {p.total_items} items have their results saved"
                 f"{f' (run {p.run_id})' if p.run_id else ''} in {db_path}; ")
    return (f"{saved}the run is recorded as interrupted; rerun the same command to resume "
            "(saved results are not computed again)")


def _score(path, ref, text, suite, metrics, out, db, workers, device, param, asset, system,
           name, chunk_size, retry_errors, progress, fmt="auto", allow_pipes=False,
           layout="long", versa_config=None, text_encoding=None, analysis_cache=None) -> None:
    from speechqe import manifest
    from speechqe.devices import is_device_name, resolve_device
    from speechqe.engine.evaluation import EvaluationConfig, Steps, evaluate
    from speechqe.plugins import PARAM_LABEL
    from speechqe.store import LAYOUTS, Store

    if layout not in LAYOUTS:
        raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    if out is not None and out.suffix.lower() not in (".csv", ".parquet", ".jsonl"):
        raise ConfigError(f"--out must end in .csv, .parquet or .jsonl (got {out.name})")
    if layout == "wide" and (out is None or out.suffix.lower() != ".jsonl"):
        raise ConfigError("--layout wide writes JSONL: give --out FILE.jsonl")
    if progress not in ("auto", "bar", "plain", "none"):
        raise ConfigError("--progress must be auto, bar, plain or none")
    if metrics and suite:
        raise ConfigError("give either --suite or --metrics, not both")
    if versa_config and (metrics or suite):
        raise ConfigError("give either --versa-config or --suite/--metrics, not both")
    if not is_device_name(device):
        raise ConfigError(f"--device must be one of auto, cpu, cuda, cuda:N (got {device!r})")
    apply_asset_overrides(asset)
    db_path = db or DEFAULT_OUT_DIR / "speechqe.duckdb"
    cfg = EvaluationConfig.create(
        source=str(path), references=ref, transcripts=text, suite=suite, metrics=metrics,
        store=str(db_path), name=name, system=system, device=device, chunk_size=chunk_size,
        retry_errors=retry_errors, params=parse_params(param), report=False, baseline=None,
        format=fmt, allow_pipes=allow_pipes, text_encoding=text_encoding,
        versa_config=versa_config,
        param_label=PARAM_LABEL,
        analysis_cache=analysis_cache,
    )
    shown: set[str] = set()
    if cfg.versa_config:
        from speechqe.versa import read_versa_config

        mapping = read_versa_config(cfg.versa_config)  # shown before any file is read
        console.print(f"[bold]VERSA config {cfg.versa_config}[/]:", highlight=False)
        for line in mapping.report():
            style = "yellow" if line.startswith("not scored") else ("dim" if line.startswith("note") else "")
            console.print(f"  [{style}]{line}[/]" if style else f"  {line}", highlight=False,
                          soft_wrap=True)
        shown = {w for w, _ in mapping.unmapped}
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
            if mname not in shown:
                console.print(f"[yellow]skipping {mname}[/]: {reason}", highlight=False)

    reporter = progress_reporter(progress)
    try:
        with reporter as report:
            result = evaluate(cfg, steps, on_planned=planned, progress=report)
    except KeyboardInterrupt:
        on_interrupt(interrupted_hint(reporter.last, db_path))
        raise
    with Store(db_path, read_only=True) as store:
        records = store.results(result.run_id)
        if out is not None:
            store.export(result.run_id, out, layout=layout)
    print_summary(records, result.run_id, db_path, reused=result.n_reused_items)
    if out is not None:
        console.print(f"results written to {out}", highlight=False)


# ------------------------------------------------------------------------------------------
# Inspection commands
# ------------------------------------------------------------------------------------------
@app.command("metrics")
def list_metrics(
    as_json: bool = typer.Option(False, "--json", help="Print the contracts as JSON, with each metric's parameters and their defaults."),
) -> None:
    """List every metric with its contract: outputs (direction, valid range, aggregation,
    default regression threshold), input rate and needs, the device it would use here, its
    adapter and core. A narrow terminal gets one block per metric instead of the table."""
    import dataclasses

    from speechqe import plugins
    from speechqe.config import plain
    from speechqe.metric import build_params

    metrics = plugins.available()
    here = _device_here(metrics)
    if as_json:
        out = {n: {**dataclasses.asdict(c.spec), "device_here": here(c.spec.device),
                   "adapter": c.__module__, "registered_by": plugins.origin(n),
                   "params": plain(build_params(c, {}))} for n, c in metrics.items()}
        console.print_json(json.dumps(out, default=str))
        _report_broken_plugins(plugins.broken())
        return
    table = Table(title="metrics")
    for col in ("metric", "outputs", "rate", "needs", "dir.", "range", "aggr.", "threshold",
                "device", "batch", "ver.", "extra", "adapter\ncore"):
        table.add_column(col, overflow="fold")
    for n, cls in metrics.items():
        s = cls.spec
        table.add_row(  # one line per output in the output columns
            n, "\n".join(s.output_names), _rate(s), _needs(s),
            "\n".join(_direction(o) for o in s.outputs), "\n".join(_range(o) for o in s.outputs),
            "\n".join(o.aggregation for o in s.outputs),
            "\n".join(_threshold(o) for o in s.outputs), here(s.device),
            "yes" if s.batched else "no", s.version, s.extra or "-",
            f"{cls.__module__}\n{s.core or '-'}",
        )
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if natural <= console.width:
        console.print(table)
    else:  # too narrow for the table: rich would cut names ("met…"); one block per metric
        for n, cls in metrics.items():
            s = cls.spec
            console.print(
                f"[bold]{n}[/] v{s.version}: {_rate(s)}, needs {_needs(s)}, device "
                f"{here(s.device)}, {'batched' if s.batched else 'one item at a time'}"
                + (f", extra '{s.extra}'" if s.extra else ""), highlight=False)
            for o in s.outputs:
                console.print(f"  {o.name} {_direction(o)} {_range(o)} {o.aggregation}"
                              + (f" {o.unit}" if o.unit else "")
                              + f"; regression threshold {_threshold(o)}", highlight=False)
            console.print(f"  adapter {cls.__module__}; core {s.core or '-'}", highlight=False,
                          style="dim")
    _report_broken_plugins(plugins.broken())


def _device_here(metrics):
    """``spec.device`` -> what ``--device auto`` would use on this machine: ``cuda``, or
    ``cpu (cuda-capable)`` for a GPU metric where torch sees no GPU (torch is asked once)."""
    gpu = None

    def here(device: str) -> str:
        nonlocal gpu
        if device != "cuda":
            return device
        if gpu is None:
            from speechqe.devices import resolve_device

            try:
                gpu = resolve_device("auto") != "cpu"
            except ImportError:  # no torch: no GPU either
                gpu = False
        return "cuda" if gpu else "cpu (cuda-capable)"

    return here


def _rate(s) -> str:
    return f"{s.sample_rate} Hz" if s.sample_rate else "native rate"


def _needs(s) -> str:
    return ", ".join(x for x, f in (("reference", s.needs_reference), ("text", s.needs_text)) if f) or "-"


def _direction(o) -> str:
    return "↑" if o.higher_is_better else ("↓" if o.higher_is_better is False else "·")


def _range(o) -> str:
    return f"[{_b(o.valid_range[0])}, {_b(o.valid_range[1], upper=True)}]"


def _threshold(o) -> str:
    return f"{o.regression_threshold:g}" if o.regression_threshold is not None else "relative"


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
    path: Path = typer.Argument(..., help=_SOURCE_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the JSONL manifest."),
    ref: Optional[Path] = typer.Option(None, "--ref", help=_REF_HELP),
    text: Optional[Path] = typer.Option(None, "--text", help=_TEXT_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="System name for a flat folder or a list without systems."),
    fmt: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    allow_pipes: bool = typer.Option(False, "--allow-pipes", help=_PIPES_HELP),
    text_encoding: Optional[str] = typer.Option(None, "--text-encoding", help=_ENCODING_HELP),
) -> None:
    """Build a speech-set manifest (headers and content hashes only) and write it as JSONL."""
    from speechqe import manifest

    try:
        sset = manifest.load_speech_set(path, ref_dir=ref, text_file=text, system=system,
                                        format=fmt, text_encoding=text_encoding,
                                        allow_pipes=allow_pipes)
    except SpeechQEError as exc:
        fail(exc)
    sset.to_jsonl(output)
    console.print_json(json.dumps(manifest.summarise(sset)))


@app.command("runs")
def list_runs(db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db", help="Results store (DuckDB).")) -> None:
    """List the runs in a results store, oldest first, with what each scored and the metric
    parameters it was given."""
    from speechqe.engine.history import describe_metric_parameters, describe_selection
    from speechqe.store import Store

    try:
        with Store(db, read_only=True) as store:
            runs = store.runs()
    except SpeechQEError as exc:
        fail(exc)
    table = Table(title=str(db))
    for col in ("run_id", "name", "status", "started", "items", "records", "errors", "reused",
                "suite / metrics", "params"):
        table.add_column(col, overflow="fold")
    for r in runs:
        params = describe_metric_parameters(r)
        table.add_row(
            r["run_id"], r["name"] or "", r["status"], str(r["started_at"])[:19],
            str(r["n_items"]), str(r["n_records"]), str(r["n_errors"]), str(r["n_reused"]),
            describe_selection(r), "-" if params == "defaults" else params,
        )
    console.print(table)


@app.command("summary")
def summary(
    run: str = typer.Argument("latest", help="Run id (or a unique prefix), or 'latest'."),
    db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db", help="Results store (DuckDB)."),
) -> None:
    """Print a stored run: what it was asked to do (source, suite or metrics, parameters), its
    status, and the system-by-metric summary of its results."""
    from speechqe.store import Store

    try:
        with Store(db, read_only=True) as store:
            r = store.run(run)
            # A run that stopped early shows what it stored itself, not records a later run
            # computed for the same items.
            records = store.results(r["run_id"], own_only=r["status"] != "finished")
    except SpeechQEError as exc:
        fail(exc)
    _print_run_header(r, records)
    print_summary(records, r["run_id"], db, reused=r["n_reused"] or 0)


def _print_run_header(r: dict, records: list[dict]) -> None:
    from speechqe.engine.history import (
        describe_metric_parameters,
        describe_selection,
        run_parameters,
        status_note,
    )

    p = run_parameters(r)
    started = str(r["started_at"])[:19] if r.get("started_at") else "?"
    finished = str(r["finished_at"])[:19] if r.get("finished_at") else "not finished"
    console.print(f"[bold]run {r['run_id']}[/] ({r.get('name') or '-'}): {r['status']}; "
                  f"started {started} UTC, {'finished ' + finished + ' UTC' if r.get('finished_at') else finished}",
                  highlight=False, soft_wrap=True)
    note = status_note(r)
    if note:
        items_done = len({x["item_id"] for x in records})
        colour = "red" if r["status"] == "failed" else "yellow"
        console.print(f"[bold {colour}]{note}[/] ({items_done} of {r['n_items']} items have records)",
                      highlight=False, soft_wrap=True)
    source = p.get("source") or r.get("source") or "-"
    extras = [f"references {p['references']}" if p.get("references") else "",
              f"transcripts {p['transcripts']}" if p.get("transcripts") else ""]
    console.print(f"  source {source}" + "".join(f"; {x}" for x in extras if x),
                  highlight=False, soft_wrap=True)
    console.print(f"  {describe_selection(r)}; metric parameters: {describe_metric_parameters(r)}",
                  highlight=False, soft_wrap=True)
    how = [f"device {p['device']}" if p.get("device") else "",
           f"chunk size {p['chunk_size']}" if p.get("chunk_size") else "",
           "retrying stored errors" if p.get("retry_errors") else ""]
    if any(how):
        console.print("  " + ", ".join(x for x in how if x), highlight=False, soft_wrap=True)


@app.command("export")
def export(
    out: Path = typer.Argument(..., metavar="FILE", help="Where to write: FILE.csv, .parquet or .jsonl (the format follows the extension)."),
    run: str = typer.Option("latest", "--run", help="Run id (or a unique prefix), or 'latest'."),
    db: Path = typer.Option(DEFAULT_OUT_DIR / "speechqe.duckdb", "--db", help="Results store (DuckDB)."),
    layout: str = typer.Option("long", "--layout", help="long (a row per item and output) or wide (.jsonl: a line per item, a key per output)."),
) -> None:
    """Export a stored run's results: long format (one row per item and metric output), or
    wide JSONL with --layout wide."""
    from speechqe.store import Store

    try:
        if out.suffix.lower() not in (".csv", ".parquet", ".jsonl", ".ndjson"):
            raise ConfigError(f"FILE must end in .csv, .parquet or .jsonl (got {out.name})")
        with Store(db, read_only=True) as store:
            r = store.run(run)
            store.export(r["run_id"], out, layout=layout)
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

plain_help_when_narrow(app)  # after every command is registered


def main() -> None:
    """``python -m speechqe.cli.main``: the ``speechqe`` console script."""
    import sys

    from .common import run

    sys.exit(run(app))


if __name__ == "__main__":  # pragma: no cover
    main()
