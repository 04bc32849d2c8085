"""``speechqe report``, ``speechqe compare`` and ``speechqe dashboard`` (merged into the
top-level command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import console, err_console, fail

app = typer.Typer(add_completion=False)

_DB_HELP = "Results store (DuckDB). Default: speechqe-out/speechqe.duckdb."
RELATIVE_HELP = ("Regression threshold as a fraction of the baseline value, for metric outputs "
                 "without a declared default threshold (see 'speechqe metrics').")
THRESHOLD_HELP = ("Regression threshold of one metric output, in its unit: OUTPUT=VALUE, e.g. "
                  "wer=0.01 (repeatable; overrides the output's default).")
ALLOW_MISSING_HELP = ("List systems, metrics and items of the baseline that the compared run "
                      "lacks (or newly fails) without counting them as regressions.")


def _db(db: Path | None) -> Path:
    from speechqe.engine.evaluation import DEFAULT_STORE

    return db or DEFAULT_STORE


def _policy(relative: float, threshold: List[str] | None, allow_missing: bool = False):
    """The regression policy of the command line; threshold names are checked against the
    registered metric outputs before any store is opened."""
    from speechqe.engine.history import RegressionPolicy

    return RegressionPolicy.parse(relative=relative, thresholds=threshold or (),
                                  allow_missing=allow_missing)


@app.command("report")
def report(
    run: str = typer.Argument("latest", help="Run id (or a unique prefix), or 'latest'."),
    db: Optional[Path] = typer.Option(None, "--db", help=_DB_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default: reports/<run>.html beside the store)."),
    baseline: str = typer.Option("auto", "--baseline", help="Run to compare with: auto (previous run with this name), a run id, or none."),
    worst: int = typer.Option(5, "--worst", min=0, help="Worst utterances listed per metric."),
    relative: float = typer.Option(0.01, "--relative", help=RELATIVE_HELP),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help=THRESHOLD_HELP),
    embed_audio_mb: float = typer.Option(40.0, "--embed-audio-mb", help="Audio embedded in the file at most (MiB); the rest is linked."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help=ALLOW_MISSING_HELP),
) -> None:
    """Write the self-contained HTML report of a run and print its path."""
    from speechqe.errors import SpeechQEError
    from speechqe.store import Store

    from speechqe.engine.report import write_report

    try:
        with Store(_db(db), read_only=True) as st:
            path, data = write_report(
                st, run, out, baseline=None if baseline == "none" else baseline,
                policy=_policy(relative, threshold, allow_missing), n_worst=worst,
                embed_audio_mb=embed_audio_mb,
            )
    except SpeechQEError as exc:
        fail(exc)
    cmp = data.comparison
    if cmp is not None and cmp.empty:
        err_console.print(f"[bold yellow]warning:[/] {cmp.describe_empty()}", highlight=False,
                          soft_wrap=True)
    elif cmp is not None and cmp.regressions:
        console.print(f"[bold red]{len(cmp.regressions)} regression(s)[/] against run "
                      f"{cmp.run_a['run_id']}", highlight=False)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command("compare")
def compare(
    run_a: str = typer.Argument(..., help="Baseline run (id, unique prefix or 'latest')."),
    run_b: str = typer.Argument(..., help="Run compared with it."),
    db: Optional[Path] = typer.Option(None, "--db", help=_DB_HELP),
    relative: float = typer.Option(0.01, "--relative", help=RELATIVE_HELP),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help=THRESHOLD_HELP),
    allow_missing: bool = typer.Option(False, "--allow-missing", help=ALLOW_MISSING_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when a regression is flagged (for CI)."),
) -> None:
    """Compare two runs: per system and metric, the change over the items both runs scored,
    with a paired-bootstrap 95% CI, and what the second run lost.

    A regression is a change beyond the threshold with its whole CI on the worse side (by the
    metric's declared direction), or output of RUN_A that RUN_B lacks or newly fails: whole
    systems, metrics or items (unless --allow-missing). Runs with nothing in common are an
    error (exit 2)."""
    from rich.table import Table

    from speechqe.errors import ConfigError, SpeechQEError
    from speechqe.engine.history import compare_runs
    from speechqe.plugins import output_specs
    from speechqe.store import Store

    from speechqe.engine.report.data import fmt

    try:
        policy = _policy(relative, threshold, allow_missing)
        with Store(_db(db), read_only=True) as st:
            cmp = compare_runs(st, run_a, run_b, policy)
    except SpeechQEError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(cmp.as_dict(), default=str, indent=1))
    if cmp.empty:
        fail(ConfigError(cmp.describe_empty()))
    if not as_json:
        specs = output_specs()
        t = Table(title=f"{cmp.run_a['run_id']} → {cmp.run_b['run_id']}")
        for col in ("system", "metric", "A", "B", "change [95% CI]", "threshold", "items",
                    "lost in B", "flag"):
            t.add_column(col, overflow="fold")
        for c in cmp.changes:
            spec = specs.get(c.metric)
            arrow = "" if spec is None or spec.higher_is_better is None else (
                " ↑" if spec.higher_is_better else " ↓")
            if c.flag == "regression":
                flag = "[bold red]REGRESSION[/]"
            elif c.flag == "improvement":
                flag = "[green]improvement[/]"
            else:
                flag = "new in B" if c.presence == "b_only" else ""
            if c.presence == "both":
                items = (f"{c.n_paired} paired" if c.paired else "unpaired") + f" (A {c.n_a}, B {c.n_b})"
            else:
                items = f"A {c.n_a}, B {c.n_b}"
            lost = c.lost_text or "-"
            if c.lost and c.allow_missing:
                lost += " (allowed)"
            mark = {"given": "", "declared": " (default)", "relative": " (relative)"}[c.threshold_source]
            t.add_row(c.system, c.metric + arrow, fmt(c.mean_a), fmt(c.mean_b),
                      f"{fmt(c.delta)} [{fmt(c.ci_low)}, {fmt(c.ci_high)}]",
                      fmt(c.threshold) + mark, items, lost, flag)
        console.print(t)
        n_lost = sum(1 for c in cmp.regressions if c.lost)
        console.print(
            f"{len(cmp.regressions)} regression(s)"
            + (f" ({n_lost} with lost output)" if n_lost else "")
            + f", {len(cmp.improvements)} improvement(s)"
            + (f"; lost output allowed (--allow-missing) for {len(cmp.lost)} row(s)"
               if allow_missing and cmp.lost else ""),
            highlight=False,
        )
        console.print("A and B: each run's aggregate over the items both scored (paired); "
                      "'unpaired': over each run's own items.", highlight=False, style="dim")
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
    relative: float = typer.Option(0.01, "--relative", help=RELATIVE_HELP),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help=THRESHOLD_HELP),
) -> None:
    """Serve the history dashboard (on 127.0.0.1 only, unless --host says otherwise) until
    interrupted."""
    from speechqe.errors import SpeechQEError, StoreError

    from speechqe.engine.report.server import Dashboard, is_loopback, make_server

    path = _db(db)
    try:
        if not path.exists():
            raise StoreError(f"no results store at {path}")
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
