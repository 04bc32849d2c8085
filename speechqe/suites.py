"""Scoring suites: named lists of metrics with parameters, as YAML files in ``data/suites/``.

A suite file::

    name: tts
    description: What a TTS team scores every night.
    metrics:
      - wer                       # a metric with default parameters
      - mcd: {align: dtw}         # name: {params}
      - name: f0                  # or the long form
        params: {align: dtw}
      - mos_ensemble:path/to/bundle   # name:value for metrics with a positional parameter

Unknown keys — in the suite, an entry, or a metric's parameters — are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError

_SUITE_KEYS = {"name", "description", "metrics"}
_ENTRY_KEYS = {"name", "params"}


@dataclass(frozen=True)
class SuiteEntry:
    ref: str  # 'name' or 'name:value'
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.ref.partition(":")[0]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[SuiteEntry, ...]
    path: str = ""


def suites_dir() -> Path:
    import speechqe.data

    return Path(speechqe.data.__file__).parent / "suites"


def available_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(suites_dir().glob("*.yaml"))}


def _entry(raw: Any, origin: str) -> SuiteEntry:
    if isinstance(raw, str):
        return SuiteEntry(raw.strip())
    if isinstance(raw, dict):
        if "name" in raw:
            bad = set(raw) - _ENTRY_KEYS
            if bad:
                raise ConfigError(f"{origin}: unknown keys {sorted(bad)} in metric entry {raw}")
            params = raw.get("params") or {}
            ref = str(raw["name"])
        elif len(raw) == 1:
            ref, params = next(iter(raw.items()))
            params = params or {}
        else:
            raise ConfigError(f"{origin}: a metric entry is 'name', {{name: params}} or "
                              f"{{name: ..., params: ...}}; got {raw}")
        if not isinstance(params, dict):
            raise ConfigError(f"{origin}: params of {ref} must be a mapping")
        return SuiteEntry(str(ref).strip(), tuple(sorted(params.items())))
    raise ConfigError(f"{origin}: bad metric entry {raw!r}")


def parse_suite(doc: Any, origin: str) -> Suite:
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: a suite is a mapping with 'name' and 'metrics'")
    bad = set(doc) - _SUITE_KEYS
    if bad:
        raise ConfigError(f"{origin}: unknown suite keys {sorted(bad)} (known: {sorted(_SUITE_KEYS)})")
    if not doc.get("metrics"):
        raise ConfigError(f"{origin}: the suite lists no metrics")
    entries = tuple(_entry(e, origin) for e in doc["metrics"])
    names = [e.name for e in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{origin}: metrics listed twice: {sorted(dup)}")
    return Suite(str(doc.get("name") or Path(origin).stem), str(doc.get("description") or ""),
                 entries, origin)


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (``data/suites/<name>.yaml``) or by path to a YAML file."""
    import yaml

    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        known = available_suites()
        if name_or_path not in known:
            raise ConfigError(
                f"unknown suite '{name_or_path}'. Known suites: {', '.join(known)} "
                "(or give a path to a .yaml file)"
            )
        path = known[name_or_path]
    return parse_suite(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def entries_from_list(refs: Iterable[str]) -> tuple[SuiteEntry, ...]:
    """``--metrics a,b,c:value`` -> entries.

    Raises:
        ConfigError: no metric, or a metric listed twice. A run stores one record per item
            and metric output under the output's name, so two bundles of one kind
            (``mos_ensemble:a,mos_ensemble:b``) cannot share a run: the message says to score
            them in two runs and compare those.
    """
    entries = tuple(SuiteEntry(r.strip()) for r in refs if r.strip())
    if not entries:
        raise ConfigError("--metrics lists no metric")
    by_name: dict[str, list[str]] = {}
    for e in entries:
        by_name.setdefault(e.name, []).append(e.ref)
    twice = {n: refs for n, refs in by_name.items() if len(refs) > 1}
    if twice:
        name, refs = next(iter(twice.items()))
        distinct = len(set(refs)) > 1
        raise ConfigError(
            f"--metrics lists {name} {len(refs)} times ({', '.join(refs)}): a run scores each "
            f"metric once, since its results are stored under the metric's output names"
            + (f". To compare two {name} models on this set, score each in its own run "
               f"(e.g. --name {name}-a, --name {name}-b, same --db) and compare the runs with "
               f"'speechqe compare RUN_A RUN_B' (paired, item by item)" if distinct else "")
        )
    return entries
