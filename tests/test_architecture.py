"""The layer contract (docs/architecture.md): import-linter keeps it, it catches a wrong import,
the docs say where each metric lives, and `speechqe score` and `speechqe evaluate` share one
scoring path."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

LINT = Path(sys.executable).parent / "lint-imports"
_FOLDERS = ("speechqe", "metrics", "predictors", "vocoders", "flows", "data")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_layer_contract_is_kept():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


def _copy_tree(dst: Path) -> None:
    """The sources (python files and the speechqe/ links) without data files."""
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")
    for folder in _FOLDERS:
        shutil.copytree(REPO / folder, dst / folder, symlinks=True,
                        ignore=lambda d, names: [n for n in names if not (
                            n.endswith(".py") or (Path(d) / n).is_dir())])


@pytest.mark.parametrize("module, line, broken", [
    ("speechqe/audio.py", "import speechqe.engine.runner", "speechqe.audio is not allowed to import speechqe.engine"),
    ("metrics/lsd.py", "from speechqe.predictors import bundle", "speechqe.metrics is not allowed to import speechqe.predictors"),
    ("speechqe/engine/aggregate.py", "from speechqe.cli import common", "speechqe.engine is not allowed to import speechqe.cli"),
    ("flows/train.py", "import speechqe.cli.main", "speechqe.flows is not allowed to import speechqe.cli"),
    ("speechqe/store.py", "import speechqe.plugins", "speechqe.store is not allowed to import speechqe.plugins"),
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, line, broken):
    _copy_tree(tmp_path)
    with open(tmp_path / module, "a", encoding="utf-8") as f:
        f.write(f"\n{line}\n")
    res = _lint(tmp_path)
    assert res.returncode != 0 and broken in res.stdout, res.stdout[-2000:]


def test_a_cycle_between_subpackages_breaks_the_contract(tmp_path):
    _copy_tree(tmp_path)
    with open(tmp_path / "speechqe/encoders/base.py", "a", encoding="utf-8") as f:
        f.write("\nimport speechqe.encoders.whisper\n")
    res = _lint(tmp_path)
    assert res.returncode != 0 and "No cycles are allowed in speechqe.encoders" in res.stdout


def test_a_new_top_level_module_must_be_placed_in_a_layer(tmp_path):
    _copy_tree(tmp_path)
    (tmp_path / "speechqe" / "stray.py").write_text("X = 1\n")
    res = _lint(tmp_path)
    assert res.returncode != 0 and "stray" in res.stdout


def test_metrics_doc_says_where_each_metric_lives():
    from speechqe import plugins

    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text.split("## Where each metric lives", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, tuple[str, str]] = {}
    for row in re.findall(r"^\| (`.+?) \| `(.+?)` \| `(.+?)` \|$", section, flags=re.M):
        for name in re.findall(r"`([a-z0-9_]+)`", row[0]):
            documented[name] = (row[1], row[2])
    builtin = {n: c for n, c in plugins.available().items() if c.__module__.startswith("speechqe.")}
    assert set(documented) == set(builtin)
    for name, cls in builtin.items():
        assert documented[name] == (cls.__module__, cls.spec.core), name
        __import__(cls.spec.core)  # the core module exists


def test_builtin_metrics_are_registered_by_entry_points():
    from speechqe import plugins

    for name, cls in plugins.available().items():
        if cls.__module__.startswith("speechqe."):
            assert plugins.origin(name).startswith("entry point "), name
