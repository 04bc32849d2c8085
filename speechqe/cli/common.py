"""Helpers shared by every typer app of the command line: consoles, the error exit, option
parsing, the progress reporter and the system-by-metric summary table."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, List

import typer
from rich.console import Console
from rich.table import Table

from speechqe.errors import ConfigError

# Off a terminal (logs, CI, pipes) tables get room instead of rich's default 80 columns.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

DEFAULT_OUT_DIR = Path("speechqe-out")


def fail(exc: Exception, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def apply_asset_overrides(assets: List[str] | None) -> None:
    from speechqe import assets as asset_registry

    for spec in assets or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--asset takes NAME=PATH (got {spec!r})")
        asset_registry.set_override(name.strip(), path.strip())


def parse_params(values: List[str] | None) -> dict[str, dict[str, Any]]:
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



class progress_reporter:
    """Context manager giving a progress callback: a rich bar on a terminal, plain lines in
    logs. A plain line is printed when items finish (at most one per :attr:`every` seconds)
    and, while none does, every :attr:`quiet` seconds, so a log is never silent for long; each
    line says how many items are saved in the store, which is how far a killed run got.

    :attr:`last` keeps the latest :class:`~speechqe.engine.runner.Progress` (for the message
    after Ctrl-C)."""

    every = 1.0
    quiet = 10.0

    def __init__(self, mode: str):
        if mode == "auto":
            mode = "bar" if err_console.is_terminal else "plain"
        self.mode = mode
        self._bar = None
        self._task = None
        self.last = None
        self._printed_at: float | None = None
        self._printed_done = -1
        self._final = False

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
        import time

        self.last = p
        if self.mode == "bar":
            if self._task is None:
                self._task = self._bar.add_task("score", total=p.total_items, errors=0)
            self._bar.update(self._task, completed=p.done_items, errors=p.errors)
        elif self.mode == "plain":
            now = time.monotonic()
            since = None if self._printed_at is None else now - self._printed_at
            new = p.done_items != self._printed_done
            finished = p.committed_items >= p.total_items
            if not (since is None or (finished and not self._final)
                    or (new and since >= self.every) or since >= self.quiet):
                return
            self._final = self._final or finished
            self._printed_at, self._printed_done = now, p.done_items
            busy = f", {p.in_flight} in progress" if p.in_flight and not finished else ""
            print(
                f"scored {p.done_items}/{p.total_items} items ({p.committed_items} saved, "
                f"{p.reused_items} reused, {p.records} new records, {p.errors} errors{busy}; "
                f"{p.elapsed:.0f} s)",
                file=sys.stderr, flush=True,
            )

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def print_summary(records: list[dict], run_id: str, db_path: Path, reused: int = 0) -> None:
    """System-by-metric table: mean [95% CI] per cell, error counts, directions."""
    from speechqe.engine.aggregate import aggregate
    from speechqe.plugins import output_specs

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
            cell = f"{fmt(a.mean)} [{fmt(a.ci_low)}, {fmt(a.ci_high)}]" if a.n else "-"
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
