"""Helpers shared by every typer app of the command line: consoles, the error exit and the
error handling of every command (:func:`run`), option parsing, the progress reporter and the
system-by-metric summary table."""

from __future__ import annotations

import errno
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Sequence

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


# ------------------------------------------------------------------------------------------
# Errors: what every command prints and exits with (docs/reliability.md has the table)
# ------------------------------------------------------------------------------------------
DEBUG_ENV = "SPEECHQE_DEBUG"
"""Set to 1 (or pass ``speechqe --debug``) to see the traceback behind an error message."""

EXIT_FAILED = 1  # a bug, the environment (disk full, permissions), or a command's own "no" (a regression, a failed verify)
EXIT_BAD_INPUT = 2  # bad arguments, configuration, paths or input files; usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)

# errno values of an OSError that the user's path or environment caused, not a bug: what to
# do, and the exit status (a wrong path is bad input; a full disk or a forbidden folder is the
# environment)
_OS_ERRORS = {
    errno.ENOENT: ("check the path", EXIT_BAD_INPUT),
    errno.EISDIR: ("a folder was given where a file is expected", EXIT_BAD_INPUT),
    errno.ENOTDIR: ("a file was given where a folder is expected", EXIT_BAD_INPUT),
    errno.ENAMETOOLONG: ("the path is too long", EXIT_BAD_INPUT),
    errno.ENOSPC: ("the disk is full: free some space and rerun; what was committed is kept", EXIT_FAILED),
    errno.EDQUOT: ("the disk quota is exceeded: free some space and rerun; what was committed is kept", EXIT_FAILED),
    errno.EROFS: ("the file system is read-only: choose a writable location", EXIT_FAILED),
    errno.EACCES: ("check the permissions of the path, or choose another location", EXIT_FAILED),
    errno.EPERM: ("check the permissions of the path, or choose another location", EXIT_FAILED),
    errno.EMFILE: ("too many open files: raise the limit (ulimit -n) or use fewer --workers", EXIT_FAILED),
}

_interrupt_hint: str | None = None


def debug_enabled() -> bool:
    """Whether tracebacks are shown (``speechqe --debug`` or ``SPEECHQE_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def set_debug(on: bool) -> None:
    """Turn tracebacks on for this process and the processes it starts (workers, flows)."""
    if on:
        os.environ[DEBUG_ENV] = "1"


def on_interrupt(hint: str | None) -> None:
    """What ``interrupted`` adds when Ctrl-C stops the running command (``score``: that a
    rerun resumes)."""
    global _interrupt_hint
    _interrupt_hint = hint


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr (the message is printed as text, never as markup:
    file names may hold ``[`` and ``]``)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _print_traceback(exc: BaseException) -> None:
    sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    sys.stderr.flush()


def fail(exc: Exception, code: int = EXIT_BAD_INPUT) -> None:
    """Print ``error: <exc>`` (after its traceback with ``--debug``) and exit with ``code``."""
    if debug_enabled():
        _print_traceback(exc)
    print_error(str(exc))
    raise typer.Exit(code)


def _os_error(exc: OSError) -> tuple[str, int] | None:
    """Message and exit status of an OSError that the user's path or environment caused (see
    ``_OS_ERRORS``); ``None`` for any other OSError."""
    known = _OS_ERRORS.get(exc.errno) if exc.errno is not None else None
    if known is None:
        return None
    hint, code = known
    what = exc.strerror or os.strerror(exc.errno)
    where = ", ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{what}{': ' + where if where else ''} ({hint})", code


def _store_io_error(exc: BaseException) -> tuple[str, int] | None:
    """DuckDB reports a failed read or write of the results store with its own exception
    types (IOException, TransactionException "Failed to commit: Could not write file ...: No
    space left on device", ...), not OSError: say what happened without calling it a bug."""
    module = type(exc).__module__ or ""
    if not module.lstrip("_").startswith("duckdb"):
        return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for code, (hint, status) in _OS_ERRORS.items():
        if code not in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR) and os.strerror(code).lower() in text.lower():
            return f"the results store could not be written: {text} ({hint})", status
    if type(exc).__name__ == "IOException":
        return f"the results store could not be read or written: {text}", EXIT_FAILED
    return None


def _causes(exc: BaseException):
    """``exc`` and the exceptions it was raised from or while handling, newest first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe_exception(exc: BaseException) -> tuple[str, int]:
    """The ``error:`` message and exit status for an exception that ended a command.

    A full disk or a read-only folder is reported as such even when it surfaces as another
    exception (a failed ROLLBACK after a COMMIT that could not be written): the chain of
    causes is searched for it."""
    from speechqe.errors import SpeechQEError

    if isinstance(exc, SpeechQEError):
        return str(exc), EXIT_BAD_INPUT
    for cause in _causes(exc):
        known = _os_error(cause) if isinstance(cause, OSError) else _store_io_error(cause)
        if known is not None:
            return known
    first, *rest = (str(exc).strip() or "").splitlines() or [""]
    msg = (f"unexpected {type(exc).__name__}{': ' + first if first else ''} "
           f"(rerun with --debug for the traceback; please report it)")
    return "\n".join([msg, *("  " + ln for ln in rest)]), EXIT_FAILED


def _interrupted() -> int:
    sys.stderr.write("\n")  # ^C leaves the cursor after the echoed characters
    print_error("interrupted" + (f"; {_interrupt_hint}" if _interrupt_hint else ""))
    return EXIT_INTERRUPTED


def _click_exceptions() -> tuple[type, type, type]:
    """``(ClickException, UsageError, NoArgsIsHelpError)`` of the click that typer uses
    (typer >= 0.20 carries its own copy as ``typer._click``)."""
    try:
        from typer._click import exceptions as ce
    except ImportError:  # typer on the click package
        from click import exceptions as ce
    return ce.ClickException, ce.UsageError, getattr(ce, "NoArgsIsHelpError", ())


def run(app: typer.Typer | Callable[[], Any], args: Sequence[str] | None = None,
        prog_name: str = "speechqe") -> int:
    """Run a typer app as the ``speechqe`` command and return its exit status.

    Every way a command can end becomes an exit status and at most one ``error:`` line,
    never a traceback unless ``--debug``/``SPEECHQE_DEBUG=1``:

    * a :class:`~speechqe.errors.SpeechQEError` (bad input, configuration, store): its message,
      exit 2 (commands that catch it themselves call :func:`fail`: the same);
    * a usage error (unknown option, an option value of the wrong type): the message and where
      the command's help is, exit 2;
    * an OSError of a wrong path (missing, a folder for a file): what and where, exit 2; one
      the environment caused (disk full, read-only or forbidden folder): what and where, with
      what to do, exit 1; the same for DuckDB's I/O errors on the store;
    * Ctrl-C: ``interrupted`` (plus what the command registered with :func:`on_interrupt`),
      exit 130;
    * anything else is a bug: ``unexpected TypeName: message``, exit 1.
    """
    import typer.main

    click_exc, usage_error, no_args_help = _click_exceptions()
    argv = list(sys.argv[1:] if args is None else args)
    for token in argv:  # the root options, before the command: a usage error's traceback too
        if not token.startswith("-") or token == "--":
            break
        if token == "--debug":
            set_debug(True)
    command = typer.main.get_command(app) if isinstance(app, typer.Typer) else app
    try:
        rv = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit as exc:  # sys.exit inside a command
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_FAILED)
    except click_exc as exc:
        if no_args_help and isinstance(exc, no_args_help):
            return exc.exit_code  # typer has printed the help
        if debug_enabled():
            _print_traceback(exc)
        msg = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, usage_error) and ctx is not None:
            msg += f" (see '{ctx.command_path} --help')"
        print_error(msg)
        return exc.exit_code
    except typer.Abort:
        return _interrupted()
    except Exception as exc:  # noqa: BLE001 - the one place where every error ends
        if debug_enabled():
            _print_traceback(exc)
        msg, code = describe_exception(exc)
        print_error(msg)
        return code
    if rv == EXIT_INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130)
        return _interrupted()
    return rv if isinstance(rv, int) else 0


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
