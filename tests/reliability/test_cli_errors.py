"""The error handling of every command (:func:`speechqe.cli.common.run`), on a small typer app
whose commands raise each kind of exception: exit status, the one ``error:`` line, tracebacks
only with ``--debug``."""

from __future__ import annotations

import errno

import pytest
import typer

from speechqe.cli import common
from speechqe.errors import ConfigError, StoreError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def root(debug: bool = typer.Option(False, "--debug")) -> None:
    common.set_debug(debug)


class FakeDuckDBError(Exception):
    """Stands in for duckdb's exception types (matched by module and name)."""


FakeDuckDBError.__module__ = "_duckdb"
FakeDuckDBError.__name__ = "TransactionException"


def _masked_disk_full():
    try:
        raise FakeDuckDBError('Failed to commit: Could not write file "s.duckdb.wal": '
                              "No space left on device")
    except FakeDuckDBError:
        raise FakeDuckDBError("cannot rollback - no transaction is active")


def _caught_then_fail():
    """What commands do: catch a SpeechQEError, hand it to fail()."""
    try:
        raise ConfigError("via fail")
    except ConfigError as exc:
        common.fail(exc)


RAISES = {
    "config": lambda: (_ for _ in ()).throw(ConfigError("bad thing [bold]x[/] named")),
    "store": lambda: (_ for _ in ()).throw(StoreError("not a store")),
    "bug": lambda: (_ for _ in ()).throw(ValueError("first line\nsecond line")),
    "missing": lambda: open("/nonexistent/speechqe/x"),
    "full": lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device", "/o/x.csv")),
    "readonly": lambda: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system", "/ro/s.duckdb")),
    "masked": _masked_disk_full,
    "ctrl-c": lambda: (_ for _ in ()).throw(KeyboardInterrupt()),
    "exit3": lambda: (_ for _ in ()).throw(typer.Exit(3)),
    "sysexit": lambda: (_ for _ in ()).throw(SystemExit(4)),
    "fail": lambda: _caught_then_fail(),
}


@app.command()
def boom(kind: str, hint: bool = typer.Option(False, "--hint")) -> None:
    if hint:
        common.on_interrupt("rerun to resume")
    RAISES[kind]()


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    # set (not deleted), so that monkeypatch restores it after --debug has turned it on
    monkeypatch.setenv(common.DEBUG_ENV, "0")
    common.on_interrupt(None)
    yield
    common.on_interrupt(None)


@pytest.mark.parametrize("kind, code, words", [
    ("config", 2, "error: bad thing [bold]x[/] named"),  # markup printed as text
    ("store", 2, "error: not a store"),
    ("bug", 1, "error: unexpected ValueError: first line (rerun with --debug for the traceback; please report it)"),
    ("missing", 2, "error: No such file or directory: /nonexistent/speechqe/x (check the path)"),
    ("full", 1, "error: No space left on device: /o/x.csv (the disk is full: free some space and rerun; what was committed is kept)"),
    ("readonly", 1, "error: Read-only file system: /ro/s.duckdb (the file system is read-only"),
    ("masked", 1, "error: the results store could not be written: Failed to commit"),
    ("ctrl-c", 130, "error: interrupted"),
    ("fail", 2, "error: via fail"),
])
def test_each_kind_of_error(capsys, kind, code, words):
    assert common.run(app, ["boom", kind]) == code
    out, err = capsys.readouterr()
    assert [ln for ln in (out + err).splitlines() if ln.startswith("error:")] == [
        next(ln for ln in err.splitlines() if ln.startswith("error:"))]
    assert words in " ".join(err.split()), err
    assert "Traceback" not in out + err


def test_unexpected_multi_line_message_keeps_its_other_lines_below(capsys):
    common.run(app, ["boom", "bug"])
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "  second line"


def test_exit_codes_of_the_command_pass_through(capsys):
    assert common.run(app, ["boom", "exit3"]) == 3
    assert common.run(app, ["boom", "sysexit"]) == 4
    assert capsys.readouterr().err == ""


def test_interrupt_hint(capsys):
    assert common.run(app, ["boom", "ctrl-c", "--hint"]) == 130
    assert "error: interrupted; rerun to resume" in capsys.readouterr().err


def test_usage_errors_name_the_help(capsys):
    assert common.run(app, ["boom"]) == 2
    err = capsys.readouterr().err
    assert "error: Missing argument 'kind'" in err and "--help" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["config", "bug", "full", "fail"])
def test_debug_shows_the_traceback_then_the_same_line(capsys, kind):
    code = common.run(app, ["--debug", "boom", kind])
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.index("Traceback") < err.index("error:")
    assert code == {"config": 2, "bug": 1, "full": 1, "fail": 2}[kind]


def test_debug_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv(common.DEBUG_ENV, "1")
    common.run(app, ["boom", "store"])
    assert "Traceback" in capsys.readouterr().err
