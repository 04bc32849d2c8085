"""The one-namespace layout: every package folder is listed in pyproject and imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


def _extra_modules() -> set[str]:
    """Top-level import names of every optional dependency (the extras of pyproject)."""
    from importlib.metadata import PackageNotFoundError, distribution

    names: set[str] = set()
    extras = _pyproject()["project"]["optional-dependencies"]
    for extra, reqs in extras.items():
        for req in reqs:
            dist = re.split(r"[<>=\[ ;]", req, maxsplit=1)[0]
            if dist.startswith("speechqe"):
                continue
            try:
                top = distribution(dist).read_text("top_level.txt")
            except PackageNotFoundError:
                top = None
            names |= set((top or dist.replace("-", "_")).split())
    return names


_BLOCKED_IMPORT = """
import importlib, json, pkgutil, sys
blocked = set(json.loads(sys.argv[1]))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: an extra)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
for pkg in json.loads(sys.argv[2]):
    importlib.import_module(pkg)
failed = {}
import speechqe
for m in pkgutil.walk_packages(speechqe.__path__, "speechqe."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except ImportError as exc:
        failed[m.name] = str(exc)
from speechqe import plugins
print(json.dumps({"failed": failed, "metrics": sorted(plugins.available()),
                  "broken": [b.source for b in plugins.broken()]}))
"""


def test_packages_import_without_extras():
    """In a process where every optional dependency is refused at import, every package and
    every module outside the flows imports, and every metric is still listed: a hard import of
    an extra at module level fails here."""
    blocked = _extra_modules()
    assert {"prefect", "whisper", "faster_whisper", "speechmos", "plotly"} <= blocked
    packages = _pyproject()["tool"]["setuptools"]["packages"]
    res = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT, json.dumps(sorted(blocked)),
                          json.dumps(packages)], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # the Prefect flows are the 'flows' extra itself; nothing else may need an extra to import
    assert {m for m in out["failed"] if not m.startswith("speechqe.flows.")} == set(), out["failed"]
    assert all("blocked: an extra" in e for e in out["failed"].values()), out["failed"]
    assert "pesq" in out["metrics"] and "dnsmos" in out["metrics"] and not out["broken"]


def test_blocking_catches_a_hard_import(tmp_path):
    """The refusing finder works: a module that imports an extra at module level fails under
    it (so the test above can fail)."""
    (tmp_path / "hard_extra.py").write_text("import plotly\n")
    probe = _BLOCKED_IMPORT.replace("import importlib,", "import sys; sys.path.insert(0, sys.argv[3])\nimport importlib,")
    res = subprocess.run([sys.executable, "-c", probe, json.dumps(["plotly"]),
                          json.dumps(["hard_extra"]), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode != 0 and "blocked: an extra" in res.stderr, res.stderr[-2000:]


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
