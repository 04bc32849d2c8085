"""The ``evaluate-speech-set`` flow: orchestration only.

The flow calls the engine's one evaluation function, :func:`speechqe.engine.evaluation.evaluate`
(the same that ``speechqe score`` calls), with :class:`FlowSteps`, which decides only how each
step runs:

    open-store -> discover -> plan -> start-run -> score-chunk tasks (concurrently, on the task
    runner: a thread here, or Dask workers) -> commit-chunk each -> finish -> report
    -> publish-artifacts

The policy sits on the tasks:

* I/O tasks (reading the source, opening the store, committing chunks, writing the report,
  publishing artifacts) retry with back-off; scoring does not (its per-item failures are
  already records, so a failing scoring task means a lost worker: the run fails and a rerun
  resumes).
* Scoring tasks that may occupy a GPU carry the tag ``speechqe-gpu``, whose Prefect
  concurrency limit (``tag:speechqe-gpu``) bounds how many run at once across all workers.
* Work is keyed by the results store, not by Prefect's result cache: the plan step asks the
  store which ``(content hash [+ reference, transcript], metric, version, model)`` records
  exist, so a rerun submits scoring tasks only for new or changed items (none at all when
  nothing changed). Chunks are computed anywhere and committed by the flow process, the only
  writer of the DuckDB file.
* Tasks receive paths, ids and small records (a chunk of manifest items); large objects stay
  in the flow process and are passed to its in-process tasks unexamined (``quote``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from speechqe.engine import evaluation, runner
from speechqe.engine.evaluation import EvaluationConfig
from speechqe.errors import ConfigError

#: Tag of the scoring tasks that may occupy a GPU (its limit is ``tag:speechqe-gpu``).
GPU_TAG = "speechqe-gpu"


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O failures, not configuration errors (they would fail the same way again)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable state: let the retry policy decide
        return True
    return not isinstance(exc, ConfigError)


_IO_RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_transient)


# ------------------------------------------------------------------------------------------
# Steps: the engine's steps as Prefect tasks
# ------------------------------------------------------------------------------------------
#: Steps that touch files or the store: retried with back-off.
IO_STEPS = frozenset({"open-store", "discover", "commit-chunk", "report"})
_TASKS: dict[tuple[str, Any], Any] = {}


def step_task(name: str, fn: Any):
    """The Prefect task running library step ``fn`` under ``name`` (made once)."""
    key = (name, fn)
    if key not in _TASKS:
        policy = _IO_RETRIES if name in IO_STEPS else {}
        _TASKS[key] = task(fn, name=name, cache_policy=NO_CACHE, persist_result=False, **policy)
    return _TASKS[key]


@task(name="score-chunk", cache_policy=NO_CACHE, task_run_name="score-{label}")
def score_chunk(
    requests: list[runner.MetricRequest], device: str, work: runner.ChunkWork, label: str
) -> runner.ChunkResult:
    """Score one chunk with this process's loaded metrics (runs on any worker)."""
    return runner.score_work_with(requests, device, work)


@task(name="ensure-gpu-limit", cache_policy=NO_CACHE, **_IO_RETRIES)
def ensure_gpu_limit(slots: int | None) -> int:
    """Create the GPU concurrency limit when missing (1 slot), or set it to ``slots``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = f"tag:{GPU_TAG}"
    with get_client(sync_client=True) as client:
        if slots is not None:
            client.upsert_global_concurrency_limit_by_name(name, slots)
            return slots
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(name, 1)
            return 1


@task(name="publish-artifacts", cache_policy=NO_CACHE, **_IO_RETRIES)
def publish_artifacts(key: str, markdown: str, report_path: str, run_id: str) -> None:
    create_markdown_artifact(markdown=markdown, key=key,
                             description=f"speechqe run {run_id}: system x metric summary")
    create_link_artifact(link=Path(report_path).resolve().as_uri(), link_text=f"report {run_id}",
                         key=f"{key}-report", description="self-contained HTML report")


class FlowSteps(runner.Steps):
    """The engine's steps inside a flow run: each step a task (I/O steps retried), chunks
    scored by ``score-chunk`` tasks on the flow's task runner, at most ``max_in_flight``
    submitted at a time, under the GPU concurrency limit when they may occupy a GPU; the
    metrics loaded by the planning step are shared with the chunks scored in this process."""

    reuse_loaded = True

    def __init__(self, cfg: EvaluationConfig, log: Any):
        super().__init__(1)
        self.cfg = cfg
        self.log = log

    def call(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # quote: large objects (the speech set, the store, a run) pass to the in-process task
        # unexamined
        return step_task(name, fn)(*[quote(a) for a in args],
                                   **{k: quote(v) for k, v in kwargs.items()})

    def plan_device(self, device: str) -> str:
        # On Dask the chunks load their metrics on the workers (device resolved there); the
        # flow process loads a CPU copy only to fail early and record the assets.
        return "cpu" if _on_dask() else device

    def message(self, level: str, text: str) -> None:
        (self.log.warning if level == "warning" else self.log.info)(text)

    def score(self, run: runner.ActiveRun, device: str):
        scorer = score_chunk
        if run.chunks and runner.uses_gpu(run.requests, device):
            slots = ensure_gpu_limit(self.cfg.gpu_slots)
            self.log.info("GPU scoring: at most %d task(s) at once (tag %s)", slots, GPU_TAG)
            scorer = score_chunk.with_options(tags={GPU_TAG})
        failures = []
        n = len(run.chunks)
        for start in range(0, n, self.cfg.max_in_flight):
            futures = [scorer.submit(run.requests, device, run.work(k), f"{k + 1}of{n}")
                       for k in range(start, min(start + self.cfg.max_in_flight, n))]
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as exc:  # a lost worker: commit the others, then fail
                    failures.append(exc)
                    continue
                yield res
            if failures:
                raise RuntimeError(
                    f"{len(failures)} scoring task(s) failed (first: {failures[0]}); "
                    "the committed chunks are kept, a rerun scores the rest"
                ) from failures[0]


# ------------------------------------------------------------------------------------------
# The flow
# ------------------------------------------------------------------------------------------
def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    p = dict(flow_run.parameters)
    try:
        return evaluation.flow_run_name(EvaluationConfig.create(**_config_kwargs(p)))
    except (ConfigError, TypeError):
        return "evaluate-invalid-parameters"


def _config_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k in _CONFIG_PARAMS}


_CONFIG_PARAMS = {
    "source", "suite", "metrics", "references", "transcripts", "store", "name", "system",
    "device", "chunk_size", "retry_errors", "skip_unchanged", "report", "report_dir",
    "baseline", "regression_relative", "regression_thresholds", "regression_allow_missing",
    "gpu_slots", "max_in_flight", "params", "format", "text_encoding", "allow_pipes",
    "versa_config", "analysis_cache",
}


def _on_dask() -> bool:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx is not None and type(ctx.task_runner).__name__ == "DaskTaskRunner"


def task_runner(dask_address: str | None = None, dask_workers: int | None = None):
    """The task runner for scoring: a Dask cluster at ``dask_address``, a temporary
    ``LocalCluster`` of ``dask_workers`` single-threaded worker processes, or (neither) one
    thread in the flow process."""
    if dask_address and dask_workers:
        raise ConfigError("give either a Dask address or a number of local Dask workers")
    if not dask_address and not dask_workers:
        return ThreadPoolTaskRunner(max_workers=1)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - the dask extra
        from speechqe.errors import MissingDependencyError

        raise MissingDependencyError("prefect-dask", "dask", "running scoring tasks on Dask") from exc
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    if dask_workers < 1:
        raise ConfigError("the number of Dask workers must be at least 1")
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None},
    )


#: Environment variables that put the scoring tasks of every run of this process (and of the
#: runs a ``speechqe serve`` process starts) on Dask.
DASK_ADDRESS_ENV = "SPEECHQE_DASK_ADDRESS"
DASK_WORKERS_ENV = "SPEECHQE_DASK_WORKERS"


def default_task_runner():
    """The flow's task runner: Dask when :data:`DASK_ADDRESS_ENV` or :data:`DASK_WORKERS_ENV`
    is set, else one thread."""
    address = os.environ.get(DASK_ADDRESS_ENV) or None
    workers = os.environ.get(DASK_WORKERS_ENV) or None
    try:
        n = int(workers) if workers else None
    except ValueError:
        raise ConfigError(f"{DASK_WORKERS_ENV} must be a number (got {workers!r})") from None
    return task_runner(address, n)


@flow(
    name="evaluate-speech-set",
    flow_run_name=_flow_run_name,
    task_runner=default_task_runner(),
    validate_parameters=True,
)
def evaluate_speech_set(
    source: str,
    suite: str | None = None,
    metrics: list[str] | None = None,
    references: str | None = None,
    transcripts: str | None = None,
    store: str = str(evaluation.DEFAULT_STORE),
    name: str | None = None,
    system: str | None = None,
    device: str = "auto",
    chunk_size: int = 16,
    retry_errors: bool = False,
    skip_unchanged: bool = False,
    report: bool = True,
    report_dir: str | None = None,
    baseline: str | None = "auto",
    regression_relative: float = 0.01,
    regression_thresholds: dict[str, float] | None = None,
    regression_allow_missing: bool = False,
    gpu_slots: int | None = None,
    max_in_flight: int = 64,
    params: dict[str, dict[str, Any]] | None = None,
    fail_on_regression: bool = False,
    format: str = "auto",
    text_encoding: str | None = None,
    allow_pipes: bool = False,
    versa_config: str | None = None,
    analysis_cache: str | None = None,
) -> dict[str, Any]:
    """Score a speech set (folder, manifest or glob of manifests) into the results store,
    then write its HTML report and publish a summary.

    The parameters are those of :class:`speechqe.engine.evaluation.EvaluationConfig`, plus
    ``fail_on_regression`` (fail the flow run after recording everything when the regression
    gate fails: a regression against the baseline, lost output of the baseline unless
    ``regression_allow_missing``, or a baseline with nothing in common; for alerting). Returns
    a small summary: run id, status, counts, report path, regressions, gate failures.
    """
    log = get_run_logger()
    cfg = EvaluationConfig.create(**_config_kwargs(locals()))
    from prefect.runtime import flow_run

    flow_run_id = str(flow_run.id) if flow_run.id else None
    result = evaluation.evaluate(cfg, FlowSteps(cfg, log), flow_run_id=flow_run_id)
    if result.report:
        publish_artifacts(evaluation.artifact_key(cfg.set_name), result.report_markdown,
                          result.report, result.run_id)
    summary = result.as_dict()
    summary.pop("report_markdown", None)
    if fail_on_regression and summary["gate_failures"]:
        raise RuntimeError(
            f"regression gate against run {summary.get('baseline')} failed: "
            + "; ".join(summary["gate_failures"])
        )
    return summary


def evaluate_with(dask_address: str | None = None, dask_workers: int | None = None):
    """The flow with its scoring tasks on the chosen task runner."""
    return evaluate_speech_set.with_options(task_runner=task_runner(dask_address, dask_workers))
