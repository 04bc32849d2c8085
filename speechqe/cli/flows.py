"""``speechqe evaluate`` (the Prefect flow, optionally on Dask) and ``speechqe serve``
(scheduled evaluations). Merged into the top-level ``speechqe`` command; Prefect is imported
only when a command runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .common import console, fail, parse_params, print_summary
from .report import ALLOW_MISSING_HELP, RELATIVE_HELP, THRESHOLD_HELP

app = typer.Typer(add_completion=False)


def load_flows(module: str = "evaluate", command: str = "speechqe evaluate/serve"):
    """A module of ``speechqe.flows`` (Prefect is the 'flows' extra; imported only here, when
    a command runs a flow)."""
    try:
        import prefect  # noqa: F401
    except ImportError as exc:
        from speechqe.errors import MissingDependencyError

        raise MissingDependencyError("prefect", "flows", command) from exc
    import importlib

    flows = importlib.import_module(f"speechqe.flows.{module}")
    _brief_console_logs()
    return flows


class _NoTraceback:
    """A console log formatter that leaves out tracebacks (unless ``--debug``): Prefect logs
    the traceback of every failed task and flow on the console, and the command ends with its
    own ``error:`` line. Prefect's API handler (the server's logs, the UI) keeps them."""

    def __init__(self, inner):
        import logging

        self.inner = inner or logging.Formatter()

    def format(self, record) -> str:
        from .common import debug_enabled

        if debug_enabled():
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _brief_console_logs() -> None:
    """Wrap the formatter of every console log handler in :class:`_NoTraceback`."""
    import logging

    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                    and not isinstance(h.formatter, _NoTraceback)):
                h.setFormatter(_NoTraceback(h.formatter))


def _flows():
    return load_flows("evaluate")


def _thresholds(values: List[str] | None) -> dict[str, float]:
    """``--threshold`` entries as the flow's mapping (names checked against the registered
    metric outputs)."""
    from speechqe.engine.history import RegressionPolicy

    return dict(RegressionPolicy.parse(thresholds=values or ()).absolute)


@app.command()
def evaluate(
    source: str = typer.Argument(..., help="A folder of audio, an audio file, a Kaldi data dir or wav.scp, a lhotse/speechqe .jsonl[.gz], an audiofolder, a SHEET .csv, or a quoted glob of manifests."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference audio: a folder, a Kaldi wav.scp or data dir, or one audio file."),
    text: Optional[Path] = typer.Option(None, "--text", help="Transcripts: 'id<TAB>text' lines or a Kaldi 'text' file."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Suite name or .yaml path (default: 'default')."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics instead of a suite (not both); each metric once."),
    db: Optional[Path] = typer.Option(None, "--db", help="Results store (DuckDB). Default: speechqe-out/speechqe.duckdb."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (runs with one name form a history)."),
    system: Optional[str] = typer.Option(None, "--system", help="System name for a flat folder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (resolved on each worker)."),
    chunk_size: int = typer.Option(16, "--chunk-size", min=1, help="Items per scoring task."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Rescore stored errors."),
    skip_unchanged: bool = typer.Option(False, "--skip-unchanged", help="Record no run when nothing changed since the last run with this name."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where reports go (default: reports/ beside the store)."),
    baseline: str = typer.Option("auto", "--baseline", help="Run to compare with: auto (previous run with this name), a run id, or none."),
    relative: float = typer.Option(0.01, "--relative", help=RELATIVE_HELP),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help=THRESHOLD_HELP),
    allow_missing: bool = typer.Option(False, "--allow-missing", help=ALLOW_MISSING_HELP),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Metric parameter METRIC.NAME=VALUE (repeatable)."),
    gpu_slots: Optional[int] = typer.Option(None, "--gpu-slots", help="Set the Prefect concurrency limit of GPU scoring tasks."),
    dask_address: Optional[str] = typer.Option(None, "--dask-address", help="Score on this Dask scheduler (tcp://host:8786)."),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Score on a temporary local Dask cluster of N worker processes."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when the regression gate fails: a regression or lost output against the baseline, or a baseline with nothing in common."),
    fmt: str = typer.Option("auto", "--format", help="Input format: auto, folder, file, jsonl, sheet, kaldi, lhotse or audiofolder."),
    allow_pipes: bool = typer.Option(False, "--allow-pipes", help="Run the pipe commands of Kaldi/lhotse entries."),
    versa_config: Optional[Path] = typer.Option(None, "--versa-config", help="Score the metrics of a VERSA score config (see docs/versa.md)."),
    text_encoding: Optional[str] = typer.Option(None, "--text-encoding", help="Encoding of the text files read (default utf-8)."),
    analysis_cache: Optional[str] = typer.Option(None, "--analysis-cache", help="Folder keeping reference analyses for later runs, or 'off'. Default: analysis-cache/ beside the store."),
) -> None:
    """Run the evaluate-speech-set Prefect flow (ephemeral API unless PREFECT_API_URL is set)."""
    from speechqe.errors import SpeechQEError
    from speechqe.engine.evaluation import DEFAULT_STORE, EvaluationConfig, check_inputs

    try:
        parameters = dict(
            source=source, references=str(ref) if ref else None,
            transcripts=str(text) if text else None, suite=suite,
            metrics=[m for m in metrics.split(",") if m.strip()] if metrics else None,
            store=str(db or DEFAULT_STORE), name=name, system=system, device=device,
            chunk_size=chunk_size, retry_errors=retry_errors, skip_unchanged=skip_unchanged,
            report=report, report_dir=str(report_dir) if report_dir else None,
            baseline=None if baseline == "none" else baseline, regression_relative=relative,
            regression_thresholds=_thresholds(threshold), regression_allow_missing=allow_missing,
            params=parse_params(param), gpu_slots=gpu_slots, format=fmt, allow_pipes=allow_pipes,
            versa_config=str(versa_config) if versa_config else None, text_encoding=text_encoding,
            analysis_cache=analysis_cache,
        )
        from speechqe.plugins import PARAM_LABEL

        # fail fast, before Prefect starts; the flow gets the parameters in canonical form
        cfg = EvaluationConfig.create(**parameters, param_label=PARAM_LABEL)
        check_inputs(cfg)
        parameters["params"] = cfg.params
        flow = _flows().evaluate_with(dask_address, dask_workers)
    except SpeechQEError as exc:
        fail(exc)
    try:
        summary = flow(**parameters, fail_on_regression=False)
    except SpeechQEError as exc:
        fail(exc)
    _print_outcome(summary, Path(parameters["store"]))
    if fail_on_regression and summary.get("gate_failures"):
        raise typer.Exit(1)


def _print_outcome(summary: dict, db: Path) -> None:
    from speechqe.store import Store

    if summary["status"] == "unchanged":
        console.print(f"nothing changed since run {summary['run_id']}: no new run", highlight=False)
        return
    with Store(db, read_only=True) as st:
        records = st.results(summary["run_id"])
    print_summary(records, summary["run_id"], db, reused=summary.get("n_reused_items", 0))
    for r in summary.get("regressions", []):
        console.print(f"[bold red]regression[/] {r['system']} / {r['metric']}: "
                      f"{r['baseline']:.4g} -> {r['value']:.4g}"
                      + (f" ({'; '.join(r['reasons'])})" if r.get("reasons") else ""),
                      highlight=False, soft_wrap=True)
    if summary.get("gate_failures") and not summary.get("regressions"):
        for reason in summary["gate_failures"]:  # a baseline with nothing in common
            console.print(f"[bold red]regression gate:[/] {reason}", highlight=False, soft_wrap=True)
    if summary.get("report"):
        console.print(f"report: {summary['report']}", highlight=False)


@app.command()
def serve(
    watch_file: Optional[Path] = typer.Argument(None, help="YAML watch file (see docs/orchestration.md)."),
    source: Optional[str] = typer.Option(None, "--source", help="One watched folder or manifest glob (instead of a watch file)."),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment and run name for --source."),
    cron: Optional[str] = typer.Option(None, "--cron", help="Cron schedule for --source, e.g. '0 2 * * *'."),
    interval_minutes: Optional[float] = typer.Option(None, "--interval-minutes", help="Or an interval for --source."),
    timezone: Optional[str] = typer.Option(None, "--timezone", help="IANA time zone of the schedule (default: UTC)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Suite name or .yaml path for --source (default: 'default')."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics for --source (instead of a suite)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Folder of reference audio for --source."),
    text: Optional[Path] = typer.Option(None, "--text", help="Transcripts ('id<TAB>text' lines) for --source."),
    db: Optional[Path] = typer.Option(None, "--db", help="Results store (DuckDB) for --source. Default: speechqe-out/speechqe.duckdb."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where the reports of --source runs go (default: reports/ beside the store)."),
    dask_address: Optional[str] = typer.Option(None, "--dask-address", help="Score every run on this Dask scheduler."),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Score every run on a local Dask cluster of N workers."),
    limit: Optional[int] = typer.Option(1, "--limit", help="Flow runs executed at once by this process."),
) -> None:
    """Serve scheduled evaluations (needs a Prefect server at PREFECT_API_URL).

    Schedules are created by the server's scheduler; the ephemeral API has none."""
    from speechqe.errors import ConfigError, SpeechQEError

    try:
        ev = _flows()
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ConfigError(
                "schedules need a Prefect server: start one with 'prefect server start --host "
                "127.0.0.1' and set PREFECT_API_URL=http://127.0.0.1:4200/api (for one-off runs "
                "without a server use 'speechqe evaluate'; see docs/orchestration.md)"
            )
        ev.task_runner(dask_address, dask_workers)  # validates the combination
        # Served runs are separate processes: they read the task runner from the environment.
        if dask_address:
            os.environ[ev.DASK_ADDRESS_ENV] = dask_address
        if dask_workers:
            os.environ[ev.DASK_WORKERS_ENV] = str(dask_workers)
        from speechqe.flows import deployments as dep

        if watch_file is not None:
            if source is not None:
                raise ConfigError("give a watch file or --source, not both")
            watches = dep.load_watches(watch_file)
        else:
            if source is None:
                raise ConfigError("give a watch file or --source with --cron/--interval-minutes")
            params = {k: v for k, v in dict(
                suite=suite, metrics=[m for m in metrics.split(",") if m.strip()] if metrics else None,
                references=str(ref) if ref else None, transcripts=str(text) if text else None,
                store=str(db) if db else None, report_dir=str(report_dir) if report_dir else None,
            ).items() if v is not None}
            from speechqe.engine.evaluation import EvaluationConfig

            watches = [dep.watch_from_dict(
                {"name": name or EvaluationConfig.create(source=source).set_name,
                 "source": source, "cron": cron, "interval_minutes": interval_minutes,
                 **({"timezone": timezone} if timezone else {}), **params}, "--source")]
        deployments = dep.deployments(watches)
    except SpeechQEError as exc:
        fail(exc)
    from prefect import serve as prefect_serve

    prefect_serve(*deployments, limit=limit)
