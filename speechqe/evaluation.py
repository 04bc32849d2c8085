"""The steps of an evaluation, as library functions the orchestrators compose.

``speechqe score`` runs them in one process; the Prefect flow ``evaluate-speech-set``
(:mod:`speechqe.flows.evaluate`) runs each as a task, schedules them, and spreads the scoring
of chunks over a Dask cluster. Nothing here imports Prefect.

    EvaluationConfig (validated) -> load_set -> plan -> runner.start_run -> chunks ->
    runner.score_work_with (anywhere) -> ActiveRun.commit -> finish -> report
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import manifest, runner, suites
from .errors import ConfigError
from .history import RegressionPolicy
from .manifest import SpeechSet

#: The results store when none is given (the CLI's default too).
DEFAULT_STORE = Path("speechqe-out") / "speechqe.duckdb"
DEVICES = ("auto", "cpu", "cuda")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything an evaluation needs, validated on construction (a bad value is a
    :class:`ConfigError` naming it, before any file is read).

    Attributes:
        source: a folder of audio, a ``.jsonl``/``.csv`` manifest, or a glob of them
            (``/data/nightly/*.jsonl``): the matches are evaluated together, their item ids
            prefixed with each match's name.
        suite, metrics: a suite name/path, or explicit metric references (not both; neither:
            the ``default`` suite).
        references, transcripts: reference folder and ``id<TAB>text`` file.
        store: the DuckDB results store.
        name: run name (the history groups runs by name; default: the set's name).
        device: ``auto``, ``cpu`` or ``cuda`` (resolved where the chunks are scored).
        skip_unchanged: record no new run when the set's content and the metric identities
            equal those of the latest finished run with the same name (nightly schedules).
        report_dir: where HTML reports go (default: ``reports/`` beside the store).
        baseline: ``auto`` (previous run of the same name), a run id, or ``None``.
        gpu_slots: size of the Prefect concurrency limit on GPU scoring tasks (``None``: keep
            the server's, or 1 when the limit does not exist yet).
        max_in_flight: scoring tasks submitted at a time (memory bound on the orchestrator).
        params: metric parameter overrides ``{metric: {name: value}}``.
    """

    source: str
    suite: str | None = None
    metrics: tuple[str, ...] = ()
    references: str | None = None
    transcripts: str | None = None
    store: str = str(DEFAULT_STORE)
    name: str | None = None
    system: str | None = None
    device: str = "auto"
    chunk_size: int = 16
    retry_errors: bool = False
    skip_unchanged: bool = False
    report: bool = True
    report_dir: str | None = None
    baseline: str | None = "auto"
    policy: RegressionPolicy = field(default_factory=RegressionPolicy)
    gpu_slots: int | None = None
    max_in_flight: int = 64
    params: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.source or not str(self.source).strip():
            raise ConfigError("source: give a folder, a manifest or a glob of manifests")
        if self.suite and self.metrics:
            raise ConfigError("give either a suite or a list of metrics, not both")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be at least 1 (got {self.chunk_size})")
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1 (got {self.max_in_flight})")
        if self.gpu_slots is not None and self.gpu_slots < 1:
            raise ConfigError(f"gpu_slots must be at least 1 (got {self.gpu_slots})")
        if self.references is not None and not Path(self.references).is_dir():
            raise ConfigError(f"references: no such folder: {self.references}")
        if self.transcripts is not None and not Path(self.transcripts).is_file():
            raise ConfigError(f"transcripts: no such file: {self.transcripts}")
        if not str(self.store).endswith(".duckdb"):
            raise ConfigError(f"store must be a .duckdb file (got {self.store})")

    @classmethod
    def create(
        cls,
        *,
        metrics: Sequence[str] | str | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        regression_relative: float = 0.01,
        regression_thresholds: Mapping[str, float] | None = None,
        **kw: Any,
    ) -> "EvaluationConfig":
        """From flow or command-line parameters (lists and mappings)."""
        if isinstance(metrics, str):
            metrics = [m for m in metrics.split(",")]
        refs = tuple(m.strip() for m in (metrics or ()) if m and m.strip())
        policy = RegressionPolicy(
            relative=float(regression_relative),
            absolute=tuple(sorted((str(k), float(v)) for k, v in (regression_thresholds or {}).items())),
        )
        frozen_params = tuple(
            sorted((str(m), tuple(sorted(dict(p).items()))) for m, p in (params or {}).items())
        )
        kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
        return cls(metrics=refs, policy=policy, params=frozen_params, **kw)

    @property
    def is_glob(self) -> bool:
        return bool(_GLOB_CHARS.search(str(self.source)))

    @property
    def set_name(self) -> str:
        """The run name: ``name``, else the source's name (a glob: its folder's name)."""
        if self.name:
            return self.name
        p = Path(self.source)
        if self.is_glob:
            parts = [x for x in p.parts if not _GLOB_CHARS.search(x)]
            return Path(*parts).name if parts else "speech-set"
        return p.stem if p.suffix.lower() in (".jsonl", ".csv") else p.name

    def report_path(self, run_id: str) -> Path:
        folder = Path(self.report_dir) if self.report_dir else Path(self.store).parent / "reports"
        return folder / f"{run_id}.html"

    def as_params(self) -> dict[str, Any]:
        """The parameters recorded with the run."""
        return {
            "source": self.source, "references": self.references,
            "transcripts": self.transcripts, "suite": self.suite, "metrics": list(self.metrics),
            "device": self.device, "chunk_size": self.chunk_size,
            "retry_errors": self.retry_errors, "params": {m: dict(p) for m, p in self.params},
        }


def matching_sources(cfg: EvaluationConfig) -> list[Path]:
    """The folder/manifest, or every match of the glob (sorted)."""
    if not cfg.is_glob:
        p = Path(cfg.source)
        if not p.exists():
            raise ConfigError(f"no such file or folder: {p}")
        return [p]
    found = sorted(Path(m) for m in glob.glob(str(cfg.source), recursive=True))
    found = [m for m in found if m.is_dir() or m.suffix.lower() in (".jsonl", ".csv")]
    if not found:
        raise ConfigError(f"nothing matches {cfg.source} (folders, .jsonl or .csv manifests)")
    return found


def load_set(cfg: EvaluationConfig) -> SpeechSet:
    """Build the speech set: read headers and hash contents (every time: a changed file is a
    new content hash, so exactly the new and changed files are scored)."""
    sources = matching_sources(cfg)
    sets = [
        manifest.load_speech_set(
            src, ref_dir=cfg.references, text_file=cfg.transcripts, system=cfg.system
        )
        for src in sources
    ]
    if len(sets) == 1:
        s = sets[0]
        return SpeechSet(s.items, name=cfg.set_name, source=s.source)
    items = []
    for src, s in zip(sources, sets):
        prefix = src.stem if src.is_file() else src.name
        items += [it.replace(id=f"{prefix}/{it.id}") for it in s.items]
    return SpeechSet(tuple(items), name=cfg.set_name, source=str(cfg.source))


def plan(cfg: EvaluationConfig, sset: SpeechSet) -> tuple[runner.Plan, str | None]:
    """The metric requests for ``sset`` and the suite name (``None`` for explicit metrics)."""
    if cfg.metrics:
        entries, suite_name, explicit = suites.entries_from_list(cfg.metrics), None, True
    else:
        s = suites.load_suite(cfg.suite or "default")
        entries, suite_name, explicit = s.entries, s.name, False
    overrides = {m: dict(p) for m, p in cfg.params}
    return runner.plan_metrics(entries, sset, explicit=explicit, overrides=overrides), suite_name


def unchanged_run(store, name: str, sset: SpeechSet, metrics: Sequence[Any]) -> dict[str, Any] | None:
    """The latest finished run named ``name`` if it scored exactly this content with exactly
    these metric versions and models (then a new run would only copy it), else ``None``.

    ``metrics`` are the run's metric instances (a model id may need the model loaded: pass
    the instances the run will use, e.g. :func:`runner.cached_metrics`)."""
    import json

    runs = [r for r in store.runs(name=name) if r["status"] == "finished"]
    if not runs:
        return None
    last = runs[-1]
    if last.get("set_hash") != sset.content_hash():
        return None
    try:
        had = sorted((m["name"], m["version"], m["model_id"]) for m in json.loads(last["metrics"] or "[]"))
    except (TypeError, ValueError, KeyError):
        return None
    now = sorted((m.spec.name, m.spec.version, m.store_id) for m in metrics)
    return last if had == now else None


def flow_run_name(cfg: EvaluationConfig, when: datetime | None = None) -> str:
    """``<set>-<suite or metrics>-<UTC time>``: readable in the Prefect UI."""
    when = when or datetime.now(timezone.utc)
    what = cfg.suite or ("+".join(cfg.metrics) if cfg.metrics else "default")
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{cfg.set_name}-{what}").strip("-")[:80]
    return f"{slug}-{when.strftime('%Y%m%dT%H%M')}"


def artifact_key(name: str) -> str:
    """A Prefect artifact key (lower-case letters, digits, dashes) for a run name."""
    key = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return ("speechqe-" + key)[:60].rstrip("-") or "speechqe"
