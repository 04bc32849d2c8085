"""The one-namespace layout: every package folder is listed in pyproject and imports."""

from __future__ import annotations

import importlib
import tomllib

from conftest import REPO


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    cfg = _pyproject()["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    listed = set(cfg["packages"])
    found = set()
    for pkg, folder in mapping.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed packages without an __init__.py"


def test_no_generic_top_level_names():
    cfg = _pyproject()["tool"]["setuptools"]
    assert all(p == "speechqe" or p.startswith("speechqe.") for p in cfg["packages"])


def test_packages_import_without_extras():
    for pkg in _pyproject()["tool"]["setuptools"]["packages"]:
        importlib.import_module(pkg)
