"""``speechqe report``, ``speechqe compare`` and ``speechqe dashboard`` (merged into the
top-level command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import console, fail

app = typer.Typer(add_completion=False)

_DB_HELP = "Results store (DuckDB). Default: speechqe-out/speechqe.duckdb."


def _db(db: Path | None) -> Path:
    from speechqe.engine.evaluation import DEFAULT_STORE

    return db or DEFAULT_STORE


def _policy(relative: float, threshold: List[str] | None):
    from speechqe.engine.history import RegressionPolicy

    return RegressionPolicy.parse(relative=relative, thresholds=threshold or ())


@app.command("report")
def report(
    run: str = typer.Argument("latest", help="Run id (or a unique prefix), or 'latest'."),
    db: Optional[Path] = typer.Option(None, "--db", help=_DB_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default: reports/<run>.html beside the store)."),
    baseline: str = typer.Option("auto", "--baseline", help="Run to compare with: auto (previous run with this name), a run id, or none."),
    worst: int = typer.Option(5, "--worst", min=0, help="Worst utterances listed per metric."),
    relative: float = typer.Option(0.01, "--relative", help="Regression threshold relative to the baseline value."),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help="Per-metric regression threshold METRIC=VALUE (repeatable)."),
    embed_audio_mb: float = typer.Option(40.0, "--embed-audio-mb", help="Audio embedded in the file at most (MiB); the rest is linked."),
) -> None:
    """Write the self-contained HTML report of a run and print its path."""
    from speechqe.errors import SpeechQEError
    from speechqe.store import Store

    from speechqe.engine.report import write_report

    try:
        with Store(_db(db), read_only=True) as st:
            path, data = write_report(
                st, run, out, baseline=None if baseline == "none" else baseline,
                policy=_policy(relative, threshold), n_worst=worst, embed_audio_mb=embed_audio_mb,
            )
    except SpeechQEError as exc:
        fail(exc)
    if data.comparison is not None and data.comparison.regressions:
        console.print(f"[bold red]{len(data.comparison.regressions)} regression(s)[/] against run "
                      f"{data.comparison.run_a['run_id']}", highlight=False)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command("compare")
def compare(
    run_a: str = typer.Argument(..., help="Baseline run (id, unique prefix or 'latest')."),
    run_b: str = typer.Argument(..., help="Run compared with it."),
    db: Optional[Path] = typer.Option(None, "--db", help=_DB_HELP),
    relative: float = typer.Option(0.01, "--relative", help="Regression threshold relative to the baseline value."),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help="Per-metric regression threshold METRIC=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when a regression is flagged (for CI)."),
) -> None:
    """Compare two runs: per system and metric, the change with a paired-bootstrap 95% CI.

    Regressions are flagged by each metric's declared direction and the thresholds."""
    from rich.table import Table

    from speechqe.errors import SpeechQEError
    from speechqe.engine.history import compare_runs
    from speechqe.plugins import output_specs
    from speechqe.store import Store

    from speechqe.engine.report.data import fmt

    try:
        policy = _policy(relative, threshold)
        with Store(_db(db), read_only=True) as st:
            cmp = compare_runs(st, run_a, run_b, policy)
    except SpeechQEError as exc:
        fail(exc)
    if as_json:
        print(json.dumps({"run_a": cmp.run_a["run_id"], "run_b": cmp.run_b["run_id"],
                          "changes": [c.as_dict() for c in cmp.changes]}, default=str, indent=1))
    else:
        specs = output_specs()
        t = Table(title=f"{cmp.run_a['run_id']} → {cmp.run_b['run_id']}")
        for col in ("system", "metric", "A", "B", "change [95% CI]", "threshold", "items", "flag"):
            t.add_column(col)
        for c in cmp.changes:
            spec = specs.get(c.metric)
            arrow = "" if spec is None or spec.higher_is_better is None else (
                " ↑" if spec.higher_is_better else " ↓")
            flag = {"regression": "[bold red]REGRESSION[/]",
                    "improvement": "[green]improvement[/]"}.get(c.flag, "")
            t.add_row(c.system, c.metric + arrow, fmt(c.mean_a), fmt(c.mean_b),
                      f"{fmt(c.delta)} [{fmt(c.ci_low)}, {fmt(c.ci_high)}]", fmt(c.threshold),
                      f"{c.n_paired} paired" if c.paired else "unpaired", flag)
        console.print(t)
        console.print(f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s)",
                      highlight=False)
    if fail_on_regression and cmp.regressions:
        raise typer.Exit(1)


@app.command("dashboard")
def dashboard(
    db: Optional[Path] = typer.Option(None, "--db", help=_DB_HELP),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Address to listen on. The default, 127.0.0.1, lets only this machine open the "
             "dashboard. Any other address (e.g. 0.0.0.0: every interface) lets everyone who can "
             "reach it read the store's reports and the audio of its runs: the dashboard has no login."),
    allow_host: Optional[List[str]] = typer.Option(
        None, "--allow-host",
        help="Another host name the browser may use in its Host header (repeatable), e.g. this "
             "machine's name when --host is 0.0.0.0. Requests naming other hosts are refused."),
    relative: float = typer.Option(0.01, "--relative", help="Regression threshold relative to the baseline value."),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help="Per-metric regression threshold METRIC=VALUE (repeatable)."),
) -> None:
    """Serve the history dashboard (on 127.0.0.1 only, unless --host says otherwise) until
    interrupted."""
    from speechqe.errors import SpeechQEError

    from speechqe.engine.evaluation import check_store
    from speechqe.engine.report.server import Dashboard, is_loopback, make_server

    path = _db(db)
    try:
        check_store(path, must_exist=True)  # the dashboard opens the store per request
        server = make_server(Dashboard(path, policy=_policy(relative, threshold)), port, host,
                             allowed_hosts=allow_host or ())
    except (SpeechQEError, OSError) as exc:
        fail(exc)
    bound, bound_port = server.server_address[:2]
    shown = f"[{bound}]" if ":" in bound else bound
    if not is_loopback(bound):
        console.print(f"[bold yellow]warning:[/] listening on {bound}: anyone who can reach this "
                      "address can read the reports and audio of this store (no login)", highlight=False)
    console.print(f"dashboard of {path}: http://{shown}:{bound_port}/ (Ctrl-C to stop)",
                  highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
