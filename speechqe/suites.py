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

The file is validated by :class:`SuiteFile` (:mod:`speechqe.config`): unknown keys — in the
suite or an entry — are errors naming the file and the key. A metric's parameters are
validated against its ``Params`` by :func:`speechqe.plugins.resolve_params`, together with the
command line's ``--param`` overrides, before any audio is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from pydantic import Field, field_validator

from .config import StrictModel, read_mapping, validate
from .errors import ConfigError


@dataclass(frozen=True)
class SuiteEntry:
    """One metric of a run: its reference (``'name'`` or ``'name:value'``) and parameters."""

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


class SuiteFile(StrictModel):
    """The schema of a suite file.

    Attributes:
        name: the suite's name (default: the file's stem).
        description: one paragraph shown by ``speechqe suites``.
        metrics: entries: ``'name'``, ``{name: params}`` or ``{name: ..., params: ...}``
            (:class:`EntryLongForm`).
    """

    name: Optional[str] = None
    description: str = ""
    metrics: list[Any] = Field(default_factory=list)

    @field_validator("metrics")
    @classmethod
    def _some(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("the suite lists no metrics")
        return v


class EntryLongForm(StrictModel):
    """A suite entry in its long form: ``{name: f0, params: {align: dtw}}``."""

    name: str
    params: Optional[dict[str, Any]] = None


def suites_dir() -> Path:
    import speechqe.data

    return Path(speechqe.data.__file__).parent / "suites"


def available_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(suites_dir().glob("*.yaml"))}


def _entry(raw: Any, where: str) -> SuiteEntry:
    if isinstance(raw, str) and raw.strip():
        return SuiteEntry(raw.strip())
    if isinstance(raw, Mapping) and "name" in raw:
        long = validate(EntryLongForm, raw, where)
        ref, params = long.name, long.params or {}
    elif isinstance(raw, Mapping) and len(raw) == 1:
        ref, params = next(iter(raw.items()))
        params = validate(Optional[dict[str, Any]], params, f"{where}.{ref}") or {}
    else:
        raise ConfigError(f"{where}: a metric entry is 'name', {{name: params}} or "
                          f"{{name: ..., params: ...}} (got {raw!r})")
    return SuiteEntry(str(ref).strip(), tuple(sorted(params.items())))


def parse_suite(doc: Any, origin: str) -> Suite:
    """A suite from its parsed YAML document; ``origin`` (the file) is named in errors.

    Raises:
        ConfigError: an unknown key, a malformed entry, no metrics, a metric listed twice.
    """
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{origin}: a suite is a mapping with 'name' and 'metrics'")
    f = validate(SuiteFile, doc, origin)
    entries = tuple(_entry(e, f"{origin}: metrics.{k}") for k, e in enumerate(f.metrics))
    names = [e.name for e in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{origin}: metrics listed twice: {sorted(dup)}")
    return Suite(f.name or Path(origin).stem, f.description, entries, origin)


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (``data/suites/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        known = available_suites()
        if name_or_path not in known:
            raise ConfigError(
                f"unknown suite '{name_or_path}'. Known suites: {', '.join(known)} "
                "(or give a path to a .yaml file)"
            )
        path = known[name_or_path]
    return parse_suite(read_mapping(path, "suite"), str(path))


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
