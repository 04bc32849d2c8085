"""Helpers shared by every typer app of the command line: consoles, the error exit, option
parsing, the progress reporter and the system-by-metric summary table."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import List

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from speechqe.errors import ConfigError

#: Columns given to output that goes to a log, a pipe or CI (no terminal, no $COLUMNS):
#: room for tables instead of rich's default 80.
OFF_TERMINAL_WIDTH = 200


class _Console(Console):
    """A console whose width is decided at every print: the terminal's, else ``$COLUMNS``
    when set (a narrow terminal behind a pager, tests), else :data:`OFF_TERMINAL_WIDTH`."""

    @property
    def size(self):  # noqa: D102 - rich's
        size = Console.size.fget(self)
        columns = os.environ.get("COLUMNS", "")
        if self._width is None and not self.is_terminal and not columns.isdigit():
            return size._replace(width=OFF_TERMINAL_WIDTH)
        return size

    @size.setter
    def size(self, new_size) -> None:
        Console.size.fset(self, new_size)


console = _Console(stderr=False)
err_console = Console(stderr=True)

DEFAULT_OUT_DIR = Path("speechqe-out")


#: Narrower than this, command help is click's plain layout, which wraps; typer's boxed
#: layout would cut long option names ("--fail-on-regressi…").
RICH_HELP_MIN_WIDTH = 100


def help_width() -> int:
    """The width typer's help would use: $TERMINAL_WIDTH, else the terminal's or $COLUMNS,
    else 80."""
    from typer import rich_utils

    return Console(width=rich_utils.MAX_WIDTH).width


class NarrowAwareCommand(TyperCommand):
    """A typer command whose ``--help`` falls back to the plain layout on narrow terminals."""

    def format_help(self, ctx, formatter) -> None:
        if help_width() >= RICH_HELP_MIN_WIDTH:
            return super().format_help(ctx, formatter)
        mode, self.rich_markup_mode = self.rich_markup_mode, None
        try:
            return super().format_help(ctx, formatter)
        finally:
            self.rich_markup_mode = mode


def plain_help_when_narrow(app: typer.Typer) -> None:
    """Give every command of ``app`` and its sub-apps :class:`NarrowAwareCommand` (those that
    chose no class of their own)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # typer's default class
            info.cls = NarrowAwareCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help_when_narrow(group.typer_instance)


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


def parse_params(values: List[str] | None) -> dict[str, dict[str, str]]:
    """``--param mcd.align=none`` -> ``{'mcd': {'align': 'none'}}``.

    Values stay the strings typed: each is converted once, by the type its metric declares
    (``EvaluationConfig`` -> :func:`speechqe.plugins.resolve_params`), so ``1e-3`` is a float
    for a float and ``none``/``no`` stay text where text is expected (a YAML reading would turn
    ``no`` into ``False`` and leave ``1e-3`` a string).

    Raises:
        ConfigError: not ``METRIC.NAME=VALUE``, or one parameter given twice with different
            values.
    """
    out: dict[str, dict[str, str]] = {}
    for v in values or []:
        key, sep, raw = v.partition("=")
        metric, dot, pname = key.partition(".")
        metric, pname = metric.strip(), pname.strip()
        if not sep or not dot or not metric or not pname:
            raise ConfigError(f"--param takes METRIC.NAME=VALUE (got {v!r})")
        given = out.setdefault(metric, {})
        if pname in given and given[pname] != raw:
            raise ConfigError(f"--param {metric}.{pname} is given twice ({given[pname]!r} and "
                              f"{raw!r}); give it once")
        given[pname] = raw
    return out



class progress_reporter:
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
    table.add_column("metric", style="bold", overflow="fold")
    for s in cols:
        table.add_column(s, justify="right", overflow="fold")
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
