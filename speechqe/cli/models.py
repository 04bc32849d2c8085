"""``speechqe models``: list, verify, fetch and convert pretrained assets.

Wired into the main CLI as a sub-app (``app.add_typer(models.app, name="models")``).
Module-level imports are light (typer, rich); the registry is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import console, fail

app = typer.Typer(
    help="Pretrained assets: where each model comes from, whether it is here, its checksums.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _disk_size(st) -> int | None:
    if st.asset.size is not None:
        return st.asset.size
    if st.present and st.location is not None:
        return sum((st.location / f.name).stat().st_size for f in st.asset.files)
    return None


def _selected(names: List[str] | None):
    from speechqe import assets

    cat = assets.catalogue()
    if not names:
        return list(cat.values())
    return [assets.get(n) for n in names]


@app.callback()
def list_models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    asset: Optional[List[str]] = typer.Option(None, "--asset", help="Use a local copy of an asset: NAME=PATH (repeatable)."),
) -> None:
    """List every asset: source, present or absent, size, checksum status, licence."""
    from speechqe import assets
    from speechqe.errors import ConfigError, SpeechQEError

    try:
        for spec in asset or []:
            name, sep, path = spec.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ConfigError(f"--asset takes NAME=PATH (got {spec!r})")
            assets.set_override(name.strip(), path.strip())
    except SpeechQEError as exc:
        fail(exc)
    if ctx.invoked_subcommand is not None:
        return

    try:
        rows = [assets.status(a) for a in assets.catalogue().values()]
    except SpeechQEError as exc:
        fail(exc)
    if as_json:
        print(json.dumps([
            {"name": s.asset.name, "source": s.asset.source, "format": s.asset.format,
             "present": s.present, "location": str(s.location) if s.location else None,
             "size": _disk_size(s), "checksums": s.checksums, "licence": s.asset.licence,
             "paper": s.asset.paper, "extra": s.asset.extra, "env_var": s.asset.env_var,
             "problem": s.problem}
            for s in rows
        ], indent=1))
        return
    table = Table(title="pretrained assets")
    for col in ("name", "source", "format", "present", "size", "sha256", "licence"):
        table.add_column(col)
    for s in rows:
        table.add_row(
            s.asset.name, s.asset.source, s.asset.format,
            "[green]present[/]" if s.present else "[yellow]absent[/]",
            _human(_disk_size(s)),
            {"registered": "registered", "pinned": "unknown, pinned at first use",
             "unpinned": "[yellow]unknown, pinned at first use (not yet used)[/]"}[s.checksums],
            s.asset.licence,
        )
    console.print(table)
    n_present = sum(s.present for s in rows)
    console.print(
        f"{n_present} of {len(rows)} present. 'speechqe models verify' re-checks checksums; "
        "'speechqe models fetch NAME' downloads a url asset; give a local copy with "
        "--asset NAME=PATH or SPEECHQE_ASSET_<NAME>=PATH.",
        highlight=False,
    )


@app.command("verify")
def verify(
    names: Optional[List[str]] = typer.Argument(None, help="Assets to verify (default: all present ones)."),
    repin: bool = typer.Option(False, "--repin", help="Forget first-use hashes of files without a registered sha256, and pin the current files."),
) -> None:
    """Re-hash every present asset file and compare with the registered (or pinned) sha256.

    Exit status 1 when a file differs or a named asset is absent.
    """
    from speechqe import assets
    from speechqe.errors import SpeechQEError

    try:
        selected = _selected(names)
    except SpeechQEError as exc:
        fail(exc)
    bad = 0
    table = Table(title="asset verification")
    for col in ("name", "result", "location"):
        table.add_column(col)
    for a in selected:
        if repin and not a.checksums_known:
            assets.unpin(a.name)
        s = assets.status(a, verify=True)
        if not s.present:
            result = "[red]absent[/]" if names else "[yellow]absent[/]"
            bad += bool(names)
        elif s.problem:
            result = f"[red]FAILED[/]: {s.problem}"
            bad += 1
        else:
            result = "[green]ok[/]" + ("" if a.checksums_known else " (pinned at first use)")
        table.add_row(a.name, result, str(s.location or "-"))
    console.print(table)
    if bad:
        raise typer.Exit(1)


@app.command("fetch")
def fetch(
    names: List[str] = typer.Argument(..., help="url assets to download into the cache."),
) -> None:
    """Download url assets into the cache (resuming partial files) and verify them."""
    from speechqe.errors import SpeechQEError

    try:
        for a in _selected(names):
            root = a.path(download=True)
            console.print(f"{a.name}: ok ({root})", highlight=False)
    except SpeechQEError as exc:
        fail(exc)


@app.command("convert-ct2-whisper")
def convert_ct2_whisper(
    source: str = typer.Argument(..., help="A CTranslate2 Whisper asset (e.g. whisper-tiny.en-ct2) or model folder."),
    out: Path = typer.Argument(..., help="The openai-whisper checkpoint to write (.pt)."),
) -> None:
    """Convert a CTranslate2 Whisper model to an openai-whisper checkpoint (dims +
    model_state_dict), loadable with backend=openai-whisper model=OUT."""
    from speechqe import assets
    from speechqe.asr.convert import convert_ct2_whisper as convert
    from speechqe.errors import SpeechQEError

    try:
        folder = assets.get(source).path() if source in assets.catalogue() else Path(source)
        path = convert(folder, out)
    except SpeechQEError as exc:
        fail(exc)
    console.print(f"wrote {path}", highlight=False)
