"""Kaldi-style pipe entries (``utt1 sox in.flac -t wav - |``), run only when allowed.

A pipe entry is a shell command whose standard output is the audio. Running commands written
in a data file is running code from that file, so readers refuse pipe entries unless the user
passes ``--allow-pipes`` (a message says so and names the line).

When allowed, each command is run **once** while the speech set is built: its output is hashed
(the content key of its scores, like a file's bytes) and kept in the cache folder under that
hash (``$SPEECHQE_CACHE/pipes/<sha256>.audio``), and the item points to that file. Everything
downstream (the runner, worker processes, reruns) then reads an ordinary file, and the bytes
scored are exactly the bytes hashed even if the command's output would change between runs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from ..assets import cache_dir
from ..errors import AudioReadError, ConfigError

#: Seconds a pipe command may run before it counts as failed.
PIPE_TIMEOUT_S = 300.0


def is_pipe(value: str) -> bool:
    """Whether a ``wav.scp`` value is a pipe command (``... |``)."""
    return value.rstrip().endswith("|")


def refuse(where: str, command: str) -> ConfigError:
    """The error for a pipe entry read without ``--allow-pipes``."""
    return ConfigError(
        f"{where}: {command.strip()!r} is a pipe command; speechqe runs commands from a data "
        "file only when told to: pass --allow-pipes (each command runs once, its output is "
        "cached and hashed), or convert the entries to plain audio paths"
    )


def pipe_cache() -> Path:
    """Where pipe outputs are kept."""
    return cache_dir() / "pipes"


def run_pipe(command: str, timeout: float = PIPE_TIMEOUT_S) -> Path:
    """Run ``command`` (a pipe entry, with or without its trailing ``|``) in the current
    folder with the shell, and return the cached file holding its standard output.

    Raises:
        AudioReadError: the command fails, times out or prints nothing (an item error: the
            item is recorded with the reason, the run goes on).
    """
    cmd = command.rstrip()
    cmd = cmd[:-1].rstrip() if cmd.endswith("|") else cmd
    try:
        proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AudioReadError(f"pipe command ran longer than {timeout:g} s: {cmd[:200]}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioReadError(
            f"pipe command exited with status {proc.returncode}"
            + (f": {err[-1][:300]}" if err else "") + f" ({cmd[:200]})"
        )
    if not proc.stdout:
        raise AudioReadError(f"pipe command wrote nothing: {cmd[:200]}")
    digest = hashlib.sha256(proc.stdout).hexdigest()
    folder = pipe_cache()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{digest}.audio"
    if not out.is_file():
        tmp = folder / f".{digest}.{os.getpid()}.tmp"
        tmp.write_bytes(proc.stdout)
        tmp.replace(out)
    return out
