"""The one evaluation path: a speech set and a suite -> records in the results store -> a
report.

Both ``speechqe score`` and the Prefect flow ``evaluate-speech-set`` (``speechqe evaluate``,
scheduled runs, Dask) call :func:`evaluate`. What differs is only *how* its steps are executed,
which the caller passes as :class:`Steps`:

* :class:`LocalSteps` (the command line): each step is a plain call; chunks are scored in this
  process or in a pool of worker processes.
* the flow's steps (:mod:`speechqe.flows.evaluate`): each step becomes a Prefect task with its
  retry policy; chunks are scored by Prefect tasks on a thread or a Dask cluster, with a GPU
  concurrency limit.

The order of the steps, what they record and every decision (what to skip, what is unchanged,
which run is the baseline) live here, so the two surfaces give identical records.

    EvaluationConfig (validated) -> open-store -> discover -> plan -> [unchanged?] -> start-run
    -> score chunks (Steps.score) -> commit-chunk each -> finish -> report (+ comparison)
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pydantic import Field, ValidationInfo, field_validator, model_validator

from speechqe import manifest, plugins, suites, versa
from speechqe.config import StrictModel, validate
from speechqe.devices import is_device_name
from speechqe.errors import ConfigError, StoreError
from speechqe.manifest import SpeechSet
from speechqe.store import Store

from . import runner
from .history import RegressionPolicy

#: The results store when none is given (the command line's default too).
DEFAULT_STORE = Path("speechqe-out") / "speechqe.duckdb"
_GLOB_CHARS = re.compile(r"[*?\[]")
#: File suffixes a glob source may match (besides folders); ``.gz`` is looked through.
_MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".scp")


class EvaluationConfig(StrictModel):
    """Everything an evaluation needs, validated on construction (a bad value is a
    :class:`ConfigError` naming it, before any file is read).

    Attributes:
        source: a folder of audio, a ``.jsonl``/``.csv`` manifest, or a glob of them
            (``/data/nightly/*.jsonl``): the matches are evaluated together, their item ids
            prefixed with each match's name.
        suite, metrics: a suite name/path, or explicit metric references (not both; neither:
            the ``default`` suite).
        references: reference audio: a folder, a Kaldi ``wav.scp`` or data dir, or one audio
            file (for a single input file).
        transcripts: an ``id<TAB>text`` or Kaldi ``text`` file.
        format: the source's format (``auto``: detected; see :data:`speechqe.manifest.FORMATS`).
        text_encoding: encoding of every text file read (default UTF-8).
        allow_pipes: run pipe commands found in Kaldi/lhotse lists.
        versa_config: a VERSA score config, mapped to speechqe metrics (instead of a suite).
        store: the DuckDB results store.
        name: run name (the history groups runs by name; default: the set's name).
        system: system name for a flat folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (resolved where chunks are scored).
        chunk_size: items per committed chunk (and per metric batch).
        retry_errors: rescore items whose stored record is an error.
        skip_unchanged: record no new run when the set's content and the metric identities
            equal those of the latest finished run with the same name (nightly schedules).
        report: write the HTML report (with the comparison against ``baseline``).
        report_dir: where HTML reports go (default: ``reports/`` beside the store).
        baseline: ``auto`` (previous run of the same name), a run id, or ``None``.
        policy: when a worse change counts as a regression.
        gpu_slots: size of the Prefect concurrency limit on GPU scoring tasks (``None``: keep
            the server's, or 1 when the limit does not exist yet).
        max_in_flight: scoring tasks submitted at a time (memory bound on the orchestrator).
        params: metric parameter overrides ``{metric: {name: value}}`` (``--param``), checked
            against each metric's declared types together with the suite's own parameters
            and kept in canonical form (``'0'`` -> ``False``): the form stored with the run.
        analysis_cache: where analyses of references (WORLD features, speaker embeddings) are
            kept for later runs: ``None``/``default`` (``analysis-cache/`` beside the store),
            a folder, or ``off`` (this run only, in memory).
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
    chunk_size: int = Field(16, ge=1)
    retry_errors: bool = False
    skip_unchanged: bool = False
    report: bool = True
    report_dir: str | None = None
    baseline: str | None = "auto"
    policy: RegressionPolicy = Field(default_factory=RegressionPolicy)
    gpu_slots: int | None = Field(None, ge=1)
    max_in_flight: int = Field(64, ge=1)
    format: str = "auto"
    text_encoding: str | None = None
    allow_pipes: bool = False
    versa_config: str | None = None
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    analysis_cache: str | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("give a folder, a manifest or a glob of manifests")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not is_device_name(v):
            raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N (got {v!r})")
        return v.strip().lower()

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str):
            v = v.split(",")
        return tuple(m.strip() for m in v if m and str(m).strip())

    @field_validator("references")
    @classmethod
    def _references(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).exists():
            raise ValueError(f"no such file or folder: {v}")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in manifest.FORMATS:
            raise ValueError(f"format must be one of {', '.join(manifest.FORMATS)} (got {v!r})")
        return v

    @field_validator("text_encoding")
    @classmethod
    def _text_encoding(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                manifest.check_encoding(v)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("versa_config")
    @classmethod
    def _versa_config(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("transcripts")
    @classmethod
    def _transcripts(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        if not str(v).endswith(".duckdb"):
            raise ValueError(f"the store must be a .duckdb file (got {v})")
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        data = info.data
        if "suite" not in data or "metrics" not in data or "versa_config" not in data or (
                sum(bool(data[k]) for k in ("suite", "metrics", "versa_config")) > 1):
            return v  # those errors are reported on their own
        entries, origin, _ = metric_entries(data["suite"], data["metrics"], data["versa_config"])
        label = (info.context or {}).get("param_label", "params.{metric}.{name}")
        resolved = plugins.resolve_params(entries, v, origin=origin, label=label)
        names = [e.name for e in entries]
        return {m: {k: resolved[names.index(m)][k] for k in p} for m, p in v.items()}

    @model_validator(mode="after")
    def _suite_xor_metrics(self) -> "EvaluationConfig":
        given = [n for n, v in (("a suite", self.suite), ("a list of metrics", self.metrics),
                                 ("a VERSA config", self.versa_config)) if v]
        if len(given) > 1:
            raise ValueError(f"give one of a suite, a list of metrics or a VERSA config, not "
                             f"both {' and '.join(given)}")
        return self

    @classmethod
    def create(
        cls,
        *,
        regression_relative: float = 0.01,
        regression_thresholds: Mapping[str, float] | None = None,
        regression_allow_missing: bool = False,
        param_label: str = "params.{metric}.{name}",
        origin: str = "evaluation",
        **kw: Any,
    ) -> "EvaluationConfig":
        """From flow or command-line parameters (paths, lists, mappings, the three regression
        settings; threshold names are checked against the registered metric outputs).

        Args:
            param_label: how a metric parameter override is named in errors (the command
                line passes ``plugins.PARAM_LABEL``, ``--param {metric}.{name}``).
            origin: where the parameters came from, named in errors (a watch file names its
                watch itself).

        Raises:
            ConfigError: a bad or unknown parameter, named; an unknown suite or metric; a
                metric parameter that its metric does not declare, or whose value does not fit
                its type (before any audio file is read).
        """
        kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
        kw["policy"] = RegressionPolicy.parse(
            relative=regression_relative, thresholds=dict(regression_thresholds or {}),
            allow_missing=regression_allow_missing,
        )
        kw["params"] = {str(m): dict(p) for m, p in (kw.get("params") or {}).items()}
        return validate(cls, kw, origin, context={"param_label": param_label})

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
        base = Path(p.name[:-3] if p.name.lower().endswith(".gz") else p.name)
        if base.suffix.lower() == ".scp":
            return p.resolve().parent.name
        if base.suffix.lower() in _MANIFEST_SUFFIXES + manifest.AUDIO_EXTENSIONS:
            return base.stem
        return p.name

    def report_path(self, run_id: str) -> Path:
        folder = Path(self.report_dir) if self.report_dir else Path(self.store).parent / "reports"
        return folder / f"{run_id}.html"

    def as_params(self) -> dict[str, Any]:
        """The parameters recorded with the run."""
        return {
            "source": self.source, "references": self.references,
            "transcripts": self.transcripts, "suite": self.suite, "metrics": list(self.metrics),
            "device": self.device, "chunk_size": self.chunk_size,
            "retry_errors": self.retry_errors, "params": {m: dict(p) for m, p in self.params.items()},
            "format": self.format, "text_encoding": self.text_encoding,
            "allow_pipes": self.allow_pipes, "versa_config": self.versa_config,
        }


# ------------------------------------------------------------------------------------------
# The library steps
# ------------------------------------------------------------------------------------------
def open_store(path: str) -> Store:
    """Open the results store for writing (a step of its own: an orchestrator retries it when a
    dashboard or another run holds the file)."""
    return Store(path)


def matching_sources(cfg: EvaluationConfig) -> list[Path]:
    """The folder/manifest, or every match of the glob (sorted)."""
    if not cfg.is_glob:
        p = Path(cfg.source)
        if not p.exists():
            raise ConfigError(f"no such file or folder: {p}")
        return [p]
    found = sorted(Path(m) for m in glob.glob(str(cfg.source), recursive=True))
    found = [m for m in found if m.is_dir() or Path(
        m.name[:-3] if m.name.lower().endswith(".gz") else m.name).suffix.lower() in _MANIFEST_SUFFIXES]
    if not found:
        raise ConfigError(f"nothing matches {cfg.source} (folders, .jsonl(.gz), .csv or .scp "
                          "manifests)")
    return found


def check_store(path: str | Path, *, must_exist: bool) -> None:
    """Refuse a file that is not a results store (corrupt, another format, a newer schema)
    before a long-running command starts; a store that another process holds passes (the
    command waits for it, or retries).

    Raises:
        StoreError: ``path`` is not a usable store, or is missing and ``must_exist``.
    """
    path = Path(path)
    if not path.exists() and not must_exist:
        return
    try:
        Store(path, read_only=True).close()
    except StoreError as exc:
        if "in use by another process" not in str(exc):
            raise


def check_inputs(cfg: EvaluationConfig) -> None:
    """Fail fast on what the evaluation would fail on later, without reading any audio: a
    missing source, a file that is not a results store, an unknown or broken suite, a bad
    metric argument (:func:`check_metrics`; the configuration itself checks the reference and
    transcripts paths and the parameters). The command line calls it before an orchestrator
    starts, so that bad input costs no Prefect server start.

    Raises:
        ConfigError: the first problem found, named.
    """
    matching_sources(cfg)
    check_store(cfg.store, must_exist=False)
    check_metrics(cfg)


def load_set(cfg: EvaluationConfig) -> SpeechSet:
    """Build the speech set: read headers and hash contents (every time: a changed file is a
    new content hash, so exactly the new and changed files are scored)."""
    sources = matching_sources(cfg)
    sets = [
        manifest.load_speech_set(
            src, ref_dir=cfg.references, text_file=cfg.transcripts, system=cfg.system,
            format=cfg.format, text_encoding=cfg.text_encoding, allow_pipes=cfg.allow_pipes,
        )
        for src in sources
    ]
    if len(sets) == 1:
        s = sets[0]
        return SpeechSet(s.items, name=cfg.set_name, source=s.source)
    items = []
    for src, s in zip(sources, sets):
        prefix = Path(src.name[:-3] if src.name.lower().endswith(".gz") else src.name).stem \
            if src.is_file() else src.name
        items += [it.replace(id=f"{prefix}/{it.id}") for it in s.items]
    return SpeechSet(tuple(items), name=cfg.set_name, source=str(cfg.source))


def check_metrics(cfg: EvaluationConfig) -> None:
    """Check the metric selection before any audio is read: each metric's ``:VALUE`` argument
    (a bundle or checkpoint path that does not exist) and a metric listed twice, so that a typo
    stops the command at once instead of after the whole set has been hashed (the parameters
    were checked when ``cfg`` was built). Creates metrics, loads no model.

    Raises:
        ConfigError: the first problem found, named.
    """
    entries, _, _ = metric_entries(cfg.suite, cfg.metrics, cfg.versa_config)
    names = set()
    for e in entries:
        name, _ = plugins.parse_metric_ref(e.ref)
        names.add(name)
        plugins.create(e.ref, {**dict(e.params), **cfg.params.get(name, {})})
    if set(cfg.params) - names:
        raise ConfigError(f"--param given for metrics not in this run: {sorted(set(cfg.params) - names)}")


def metric_entries(suite: str | None, metrics: Sequence[str], versa_config: str | None = None
                   ) -> tuple[tuple[suites.SuiteEntry, ...], str, str | None]:
    """The entries of an evaluation, where they came from (a suite file, ``--metrics`` or a
    VERSA config) and the suite name (``None`` for explicit metrics)."""
    if metrics:
        return suites.entries_from_list(metrics), "--metrics", None
    if versa_config:
        mapping = versa.read_versa_config(versa_config)
        return tuple(mapping.entries), str(versa_config), f"versa:{Path(versa_config).name}"
    s = suites.load_suite(suite or "default")
    return s.entries, s.path, s.name


def plan(cfg: EvaluationConfig, sset: SpeechSet) -> tuple[runner.Plan, str | None]:
    """The metric requests for ``sset`` and the suite name (``None`` for explicit metrics)."""
    entries, _, suite_name = metric_entries(cfg.suite, cfg.metrics, cfg.versa_config)
    unmapped: list[tuple[str, str]] = []
    if cfg.versa_config and not cfg.metrics:
        unmapped = [(w, f"not scored: {r}") for w, r in versa.read_versa_config(cfg.versa_config).unmapped]
    overrides = {m: dict(p) for m, p in cfg.params.items()}
    the_plan = runner.plan_metrics(entries, sset, explicit=bool(cfg.metrics), overrides=overrides)
    the_plan.skipped[:0] = unmapped  # a VERSA entry we cannot compute is listed, never dropped
    return the_plan, suite_name


def unchanged_run(store, name: str, sset: SpeechSet, metrics: Sequence[Any]) -> dict[str, Any] | None:
    """The latest finished run named ``name`` if it scored exactly this content with exactly
    these metric versions and models (then a new run would only copy it), else ``None``.

    ``metrics`` are the run's metric instances (a model id may need the model loaded: pass
    the instances the run will use, e.g. :func:`runner.cached_metrics`)."""
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


def write_report(store: Store, run_id: str, cfg: EvaluationConfig) -> dict[str, Any]:
    """Write the run's HTML report (with its comparison against the baseline); returns its
    path, a markdown summary, the regressions (with their reasons: a significant drop, lost
    output), the regression gate's failures (the regressions, or a comparison with nothing in
    common; empty without a baseline) and the baseline's run id."""
    from .report import write_report as _write
    from .report.render import markdown_summary

    path, data = _write(store, run_id, cfg.report_path(run_id), baseline=cfg.baseline,
                        policy=cfg.policy)
    cmp = data.comparison
    regressions = [] if cmp is None else cmp.regressions
    return {
        "path": str(path),
        "markdown": markdown_summary(data, path.resolve().as_uri()),
        "regressions": [
            {"system": c.system, "metric": c.metric, "baseline": c.mean_a, "value": c.mean_b,
             "change": c.delta, "ci": [c.ci_low, c.ci_high], "reasons": c.reasons}
            for c in regressions
        ],
        "gate_failures": [] if cmp is None else cmp.gate_failures(),
        "baseline": None if data.baseline is None else data.baseline["run_id"],
    }


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


#: How :func:`evaluate` executes its steps (plain calls and a local process pool by default;
#: the Prefect flow subclasses it).
Steps = runner.Steps


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """What an evaluation did. ``status``: ``finished``, ``interrupted``, ``failed`` (the run
    record says why) or ``unchanged`` (nothing new since ``run_id``; no run recorded)."""

    run_id: str
    status: str
    n_items: int = 0
    n_scored_items: int = 0
    n_reused_items: int = 0
    n_new_records: int = 0
    n_new_errors: int = 0
    suite: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report: str | None = None
    report_markdown: str | None = None
    regressions: list[dict[str, Any]] = field(default_factory=list)
    gate_failures: list[str] = field(default_factory=list)
    baseline: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def evaluate(
    cfg: EvaluationConfig,
    steps: Steps | None = None,
    *,
    speech_set: SpeechSet | None = None,
    on_planned: Callable[[SpeechSet, runner.Plan], None] | None = None,
    progress: Callable[[runner.Progress], None] | None = None,
    flow_run_id: str | None = None,
) -> EvaluationResult:
    """Score ``cfg``'s speech set into its store, then (``cfg.report``) write the report.

    Args:
        steps: how steps run (default: :class:`Steps`, in this process).
        speech_set: an already built set (default: :func:`load_set` of ``cfg``).
        on_planned: called with the set and the plan before any scoring (the command line
            prints what will be scored and what is skipped).
        progress: called whenever items finish, and every few seconds while none does.
        flow_run_id: recorded with the run (Prefect).

    Raises:
        ConfigError: bad source, suite, metric or parameter (a run that fails before it
            starts is still recorded as ``failed`` in the store's history).
        KeyboardInterrupt: the run is recorded ``interrupted``; a rerun resumes.
    """
    steps = steps or Steps()
    st = steps.call("open-store", open_store, cfg.store)
    active: runner.ActiveRun | None = None
    try:
        try:
            check_metrics(cfg)  # cheap: before the set's files are hashed
            sset = speech_set if speech_set is not None else steps.call("discover", load_set, cfg)
            the_plan, suite_name = steps.call("plan", plan, cfg, sset)
            for mname, reason in the_plan.skipped:
                steps.message("warning", f"skipping {mname}: {reason}")
            if on_planned is not None:
                on_planned(sset, the_plan)
            device = steps.plan_device(cfg.device)
            if cfg.skip_unchanged:
                loaded, _ = runner.cached_metrics(the_plan.requests, device)
                last = unchanged_run(st, cfg.set_name, sset, loaded)
                if last is not None:
                    steps.message("info", f"nothing changed since run {last['run_id']}: no new run")
                    return EvaluationResult(run_id=last["run_id"], status="unchanged",
                                            n_items=len(sset), suite=suite_name,
                                            skipped=list(the_plan.skipped))
            active = steps.call(
                "start-run", runner.start_run, sset, the_plan.requests, st, device=device,
                chunk_size=cfg.chunk_size, retry_errors=cfg.retry_errors,
                run_name=cfg.set_name, suite=suite_name, params=cfg.as_params(),
                progress=progress, flow_run_id=flow_run_id, reuse_loaded=steps.reuse_loaded,
                analysis_cache=cfg.analysis_cache, on_pending=steps.prepare,
            )
        except Exception as exc:
            if active is None:
                st.record_failed_run(
                    name=cfg.set_name, source=cfg.source, suite=cfg.suite,
                    params=cfg.as_params(), code_version=runner.code_version(),
                    error=f"{type(exc).__name__}: {exc}", flow_run_id=flow_run_id,
                )
            raise
        steps.message("info", f"run {active.run_id}: {len(active.items)} items, "
                              f"{len(active.items) - active.n_reused} to score in "
                              f"{len(active.chunks)} chunks, {active.n_reused} reused")
        r = runner.run_chunks(active, steps, cfg.device)
        out = EvaluationResult(
            run_id=r.run_id, status=r.status, n_items=r.n_items,
            n_scored_items=r.n_scored_items, n_reused_items=r.n_reused_items,
            n_new_records=r.n_new_records, n_new_errors=r.n_new_errors, suite=suite_name,
            skipped=list(the_plan.skipped),
        )
        if cfg.report:
            rep = steps.call("report", write_report, st, r.run_id, cfg)
            out.report, out.report_markdown = rep["path"], rep["markdown"]
            out.regressions, out.baseline = rep["regressions"], rep["baseline"]
            out.gate_failures = rep["gate_failures"]
            steps.message("info", f"report: {rep['path']}")
            for reason in rep["gate_failures"]:
                steps.message("warning", f"regression gate against {rep['baseline']}: {reason}")
        return out
    finally:
        steps.close()
        st.close()


__all__ = [
    "DEFAULT_STORE",
    "EvaluationConfig",
    "EvaluationResult",
    "Steps",
    "artifact_key",
    "check_metrics",
    "check_inputs",
    "check_store",
    "evaluate",
    "flow_run_name",
    "load_set",
    "matching_sources",
    "open_store",
    "plan",
    "unchanged_run",
    "write_report",
]
