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


def test_package_data_ships_every_data_file():
    """Every non-Python file inside a package folder (templates, suites, asset catalogues,
    samples) is matched by [tool.setuptools.package-data], so the wheel carries it."""
    cfg = _pyproject()["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    data = cfg.get("package-data", {})

    def folder(pkg: str):
        root = max((p for p in mapping if pkg == p or pkg.startswith(p + ".")), key=len)
        return (REPO / mapping[root]).joinpath(*pkg[len(root):].split(".")[1:])

    packages = {folder(p).resolve(): p for p in cfg["packages"]}
    missing = []
    for path, pkg in packages.items():
        shipped = {f.resolve() for pattern in data.get(pkg, []) for f in path.glob(pattern)}
        stack = [path]
        while stack:
            for entry in stack.pop().iterdir():
                if entry.name == "__pycache__" or entry.resolve() in packages:
                    continue  # caches, and sub-packages (checked on their own)
                if entry.is_dir():
                    stack.append(entry)
                elif entry.suffix not in (".py", ".pyc") and entry.resolve() not in shipped:
                    missing.append(str(entry.relative_to(REPO)))
    assert missing == [], "add these to [tool.setuptools.package-data]"
