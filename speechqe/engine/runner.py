"""The scoring engine: speech set x metrics -> records in the results store.

For each chunk of items the runner decodes every signal once (reference and prompt too, when a
metric needs them), hands all metrics the same :class:`~speechqe.metric.ScoringInput`
objects (so shared analyses are computed once), turns every failure into a typed error record
for exactly the item and metric it concerns, and commits the chunk to the store. Before any work
it asks the store which records exist, so a rerun — after a kill, or with one metric added —
computes only what is missing.

With ``workers > 1`` chunks are scored in a pool of processes (each loads its metrics' models
once); the main process alone writes to the store.

The steps are public so that orchestrators share them: :func:`start_run` plans and records a
run (an :class:`ActiveRun`), :meth:`ActiveRun.work` gives each pending chunk as a picklable
:class:`ChunkWork`, :func:`score_work_with` scores one anywhere (a Prefect task, a Dask worker)
with that process's cached metrics, and :meth:`ActiveRun.commit` / :meth:`ActiveRun.finish`
write the results from the one process that holds the store.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from speechqe import assets, plugins
from speechqe.audio import LoadedAudio
from speechqe.devices import is_cuda, resolve_device
from speechqe.errors import (
    ConfigError,
    ItemError,
    MetricComputationError,
    UnexpectedItemError,
    item_error,
)
from speechqe.manifest import AudioItem, SpeechSet
from speechqe.store import ScoreRecord, Store
from speechqe.metric import ItemScore, Metric, ScoringInput


@dataclass(frozen=True)
class MetricRequest:
    """A picklable recipe for a metric: registry reference (``name`` or ``name:value``) and
    parameters. Worker processes rebuild their metrics from these."""

    ref: str
    params: tuple[tuple[str, Any], ...] = ()

    def build(self, device: str) -> Metric:
        return plugins.create(self.ref, dict(self.params), device=device)


def metric_device(metric_cls: type[Metric], device: str) -> str:
    """The device a metric runs on: the resolved GPU for metrics that declare one, else the
    CPU."""
    return device if (is_cuda(device) and metric_cls.spec.device == "cuda") else "cpu"


def input_key(item: AudioItem, metric: Metric) -> str:
    """The store key of ``item`` for ``metric``: the content sha256, combined with the
    reference's (and prompt's) hash and the transcript when the metric uses them."""
    spec = metric.spec
    parts = [item.sha256]
    if spec.needs_reference:
        parts.append("ref:" + (item.ref_sha256 or "-"))
        if item.prompt_sha256:
            parts.append("prompt:" + item.prompt_sha256)
    if spec.needs_text:
        parts.append("text:" + (item.text if item.text is not None else "\x00none"))
    if len(parts) == 1:
        return item.sha256
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one."""
    from speechqe import __version__

    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


# ------------------------------------------------------------------------------------------
# Scoring one chunk (in this process or in a worker)
# ------------------------------------------------------------------------------------------
def _record(
    item: AudioItem, metric: Metric, key: str, output: str, *,
    value: float | None = None, exc: ItemError | None = None, extra: dict | None = None,
    prefix: str = "",
) -> ScoreRecord:
    return ScoreRecord(
        input_key=key, metric=output, metric_version=metric.spec.version,
        model_id=metric.store_id, scorer=metric.spec.name, sha256=item.sha256,
        value=value, status="ok" if exc is None else "error",
        error_type=None if exc is None else exc.code,
        error=None if exc is None else prefix + str(exc),
        extra=extra or {},
    )


def _error_records(
    item: AudioItem, metric: Metric, key: str, exc: ItemError, prefix: str = ""
) -> list[ScoreRecord]:
    return [_record(item, metric, key, o.name, exc=exc, prefix=prefix) for o in metric.spec.outputs]


def _score_records(item: AudioItem, metric: Metric, key: str, res: ItemScore) -> list[ScoreRecord]:
    out = []
    for o in metric.spec.outputs:
        if o.name in res.errors:
            out.append(_record(item, metric, key, o.name, exc=res.errors[o.name], extra=res.extra))
            continue
        if o.name not in res.values:
            exc = MetricComputationError(f"{metric.spec.name} returned no value for {o.name}")
            out.append(_record(item, metric, key, o.name, exc=exc))
            continue
        value = float(res.values[o.name])
        try:
            o.check(value)
        except ValueError as err:
            out.append(_record(item, metric, key, o.name, exc=MetricComputationError(str(err))))
            continue
        out.append(_record(item, metric, key, o.name, value=value, extra=res.extra))
    return out


def _wrap_unexpected(exc: Exception) -> UnexpectedItemError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UnexpectedItemError(f"{type(exc).__name__}: {text[:300]}")


@dataclass
class ChunkResult:
    records: list[ScoreRecord]
    warnings: dict[str, str] = field(default_factory=dict)
    n_items: int = 0


def score_chunk(
    items: Sequence[AudioItem],
    todo: Sequence[Sequence[int]],
    metrics: Sequence[Metric],
    keys: Sequence[Sequence[str]],
) -> ChunkResult:
    """Score ``items``; ``todo[i]`` lists the indices of the metrics pending for item ``i`` and
    ``keys[i][m]`` is item ``i``'s input key for metric ``m``.

    Every (item, pending metric) pair gives records for all the metric's outputs: values, or
    errors with their reason. Only ``BaseException``s that are not ``Exception`` (Ctrl-C,
    SystemExit) escape.
    """
    records: list[ScoreRecord] = []
    warnings: dict[str, str] = {}
    inputs: list[ScoringInput | None] = []
    ref_errors: dict[int, ItemError] = {}
    needs_ref = any(metrics[m].spec.needs_reference for t in todo for m in t)
    for i, item in enumerate(items):
        if item.error is not None:  # header unreadable at manifest time
            exc = item_error(item.error_type or "unreadable", item.error)
            for m in todo[i]:
                records += _error_records(item, metrics[m], keys[i][m], exc)
            inputs.append(None)
            continue
        try:
            audio = item.load()  # the whole file, or only the item's segment and channel
        except ItemError as exc:
            for m in todo[i]:
                records += _error_records(item, metrics[m], keys[i][m], exc)
            inputs.append(None)
            continue
        if audio.check.warnings:
            warnings[item.id] = "; ".join(audio.check.warnings)
        inp = ScoringInput(item=item, audio=audio)
        if needs_ref:
            try:
                inp.ref = LoadedAudio.from_file(item.ref_path) if item.ref_path else None
                inp.prompt = LoadedAudio.from_file(item.prompt_path) if item.prompt_path else None
            except ItemError as exc:
                ref_errors[i] = exc
        inputs.append(inp)

    for m, metric in enumerate(metrics):
        batch: list[tuple[int, ScoringInput]] = []
        for i, inp in enumerate(inputs):
            if inp is None or m not in todo[i]:
                continue
            item = items[i]
            if metric.spec.needs_reference and i in ref_errors:
                records += _error_records(
                    item, metric, keys[i][m], ref_errors[i], prefix="reference or prompt: "
                )
                continue
            try:
                metric.check_input(inp)
            except ItemError as exc:
                records += _error_records(item, metric, keys[i][m], exc)
                continue
            batch.append((i, inp))
        if not batch:
            continue
        results = _run_metric(metric, [inp for _, inp in batch])
        for (i, _), res in zip(batch, results):
            if isinstance(res, ItemError):
                records += _error_records(items[i], metric, keys[i][m], res)
            else:
                records += _score_records(items[i], metric, keys[i][m], res)
    return ChunkResult(records=records, warnings=warnings, n_items=len(items))


def _run_metric(metric: Metric, inputs: list[ScoringInput]) -> list[ItemScore | ItemError]:
    """Run a metric on a batch; if the batch call fails unexpectedly, isolate the items."""
    try:
        metric.ensure_ready()
    except ItemError as exc:
        return [exc] * len(inputs)
    try:
        results = metric.score_batch(inputs)
        if len(results) != len(inputs):
            raise RuntimeError(
                f"{metric.spec.name}.score_batch returned {len(results)} results for "
                f"{len(inputs)} inputs"
            )
        return list(results)
    except Exception as exc:  # noqa: BLE001 - isolate below, never lose items
        if len(inputs) == 1:
            return [_wrap_unexpected(exc)]
    out: list[ItemScore | ItemError] = []
    for inp in inputs:
        try:
            out += metric.score_batch([inp])
        except Exception as exc:  # noqa: BLE001
            out.append(_wrap_unexpected(exc))
    return out


# ------------------------------------------------------------------------------------------
# Metric instances per process (worker processes, Prefect / Dask task workers)
# ------------------------------------------------------------------------------------------
def build_metrics(requests: Sequence[MetricRequest], device: str) -> list[Metric]:
    """Instantiate ``requests`` for ``device`` (already resolved): metrics that declare
    ``device='cuda'`` get the GPU, the others the CPU."""
    return [
        r.build(metric_device(plugins.get(plugins.parse_metric_ref(r.ref)[0]), device))
        for r in requests
    ]


#: Loaded metrics of this process, most recent last:
#: ``(requests key, device) -> (metrics, assets they resolved while loading)``.
_METRIC_CACHE: "OrderedDict[tuple[str, str], tuple[list[Metric], dict[str, Any]]]" = OrderedDict()
_METRIC_CACHE_SIZE = 2
_METRIC_CACHE_LOCK = threading.Lock()


def _requests_key(requests: Sequence[MetricRequest]) -> str:
    return json.dumps([[r.ref, [list(p) for p in r.params]] for r in requests], default=str)


def load_metrics(metrics: Sequence[Metric]) -> dict[str, Any]:
    """``ensure_ready`` every metric; returns the pretrained assets they resolved
    (name -> fingerprint and source, see :func:`speechqe.assets.recording_resolved`)."""
    with assets.recording_resolved() as used:
        for m in metrics:
            m.ensure_ready()
    return dict(used)


def cached_metrics(
    requests: Sequence[MetricRequest], device: str = "cpu"
) -> tuple[list[Metric], dict[str, Any]]:
    """The loaded metrics for ``requests`` and the assets they resolved, built once per
    process and reused by every later chunk (and by later runs on a long-lived Dask worker).
    ``device`` may be ``auto``: it is resolved here, in the process that scores.

    The instances are shared by the threads of a process: run one scoring thread per process
    (the flows' default, Dask ``threads_per_worker=1``). The two most recent metric sets are
    kept; older ones are closed.
    """
    dev = resolve_device(device)
    key = (_requests_key(requests), dev)
    with _METRIC_CACHE_LOCK:
        if key in _METRIC_CACHE:
            _METRIC_CACHE.move_to_end(key)
            return _METRIC_CACHE[key]
        metrics = build_metrics(requests, dev)
        entry = (metrics, load_metrics(metrics))
        _METRIC_CACHE[key] = entry
        while len(_METRIC_CACHE) > _METRIC_CACHE_SIZE:
            _, (old, _a) = _METRIC_CACHE.popitem(last=False)
            for m in old:
                m.close()
        return entry


def clear_metric_cache() -> None:
    with _METRIC_CACHE_LOCK:
        while _METRIC_CACHE:
            _, (old, _a) = _METRIC_CACHE.popitem(last=False)
            for m in old:
                m.close()


@dataclass(frozen=True)
class ChunkWork:
    """What one chunk needs to be scored anywhere (a small picklable record): the items, the
    indices of the metrics pending for each item, and each item's input keys."""

    items: tuple[AudioItem, ...]
    todo: tuple[tuple[int, ...], ...]
    keys: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.items)


def score_work(work: ChunkWork, metrics: Sequence[Metric]) -> ChunkResult:
    """:func:`score_chunk` on a :class:`ChunkWork`."""
    return score_chunk(work.items, work.todo, metrics, work.keys)


def score_work_with(
    requests: Sequence[MetricRequest], device: str, work: ChunkWork
) -> ChunkResult:
    """Score ``work`` with this process's cached metrics for ``requests`` (see
    :func:`cached_metrics`): the unit of work of a Prefect or Dask task."""
    return score_work(work, cached_metrics(requests, device)[0])


_WORKER_METRICS: list[Metric] | None = None


def _init_worker(requests: Sequence[MetricRequest], device: str, threads: int) -> None:
    global _WORKER_METRICS
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    _WORKER_METRICS = build_metrics(requests, device)


def _worker_chunk(work: ChunkWork) -> ChunkResult:
    assert _WORKER_METRICS is not None
    return score_work(work, _WORKER_METRICS)


# ------------------------------------------------------------------------------------------
# Runs: start (plan) -> chunks -> commit -> finish
# ------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """Progress of a run, passed to the ``progress`` callback after every committed chunk."""

    total_items: int
    done_items: int = 0
    records: int = 0
    errors: int = 0
    reused_items: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class RunResult:
    run_id: str
    status: str
    n_items: int
    n_scored_items: int
    n_reused_items: int
    n_new_records: int
    n_new_errors: int
    metrics: list[Metric]


def uses_gpu(metrics: Sequence[Metric] | Sequence[MetricRequest], device: str) -> bool:
    """Whether scoring with ``metrics`` on ``device`` (``cpu``/``cuda``/``auto``) may occupy a
    GPU: the device is not ``cpu`` and some metric declares ``device='cuda'``."""
    if device == "cpu":
        return False
    for m in metrics:
        cls = (
            plugins.get(plugins.parse_metric_ref(m.ref)[0])
            if isinstance(m, MetricRequest) else type(m)
        )
        if cls.spec.device == "cuda":
            return True
    return False


@dataclass
class ActiveRun:
    """A started run: what is pending, split into chunks, and the steps that commit scored
    chunks and close the run. Made by :func:`start_run`; the process holding the store calls
    :meth:`commit` (DuckDB has one writer) while chunks may be scored anywhere."""

    store: Store
    run_id: str
    items: list[AudioItem]
    keys: list[list[str]]
    todo: list[list[int]]
    chunks: list[list[int]]
    metrics: list[Metric]
    requests: list[MetricRequest] | None
    retry_errors: bool
    progress: Progress
    on_progress: Callable[[Progress], None] | None = None
    close_metrics: bool = True
    status: str = "running"
    result: RunResult | None = None

    @property
    def n_reused(self) -> int:
        return self.progress.reused_items

    def work(self, k: int) -> ChunkWork:
        """Chunk ``k`` as a picklable :class:`ChunkWork`."""
        c = self.chunks[k]
        return ChunkWork(
            tuple(self.items[i] for i in c),
            tuple(tuple(self.todo[i]) for i in c),
            tuple(tuple(self.keys[i]) for i in c),
        )

    def commit(self, res: ChunkResult) -> None:
        """Write a scored chunk (one transaction) and advance the progress."""
        self.store.write(self.run_id, res.records, res.warnings, replace=self.retry_errors)
        prog = self.progress
        prog.done_items += res.n_items
        prog.records += len(res.records)
        prog.errors += sum(1 for r in res.records if r.status == "error")
        if self.on_progress:
            self.on_progress(prog)

    @contextmanager
    def closing(self) -> Iterator["ActiveRun"]:
        """Finish the run when the block ends: ``finished``; ``interrupted`` on Ctrl-C;
        ``failed`` with the exception's type and message otherwise (re-raised). The summary is
        then in :attr:`result`."""
        status, error = "failed", None
        try:
            yield self
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.result = self.finish(status, error)

    def finish(self, status: str, error: str | None = None) -> RunResult:
        """Close the run with ``status`` (``finished``/``interrupted``/``failed``)."""
        self.status = status
        try:
            self.store.finish_run(self.run_id, status, n_reused=self.n_reused, error=error)
        finally:
            if self.close_metrics:
                for m in self.metrics:
                    m.close()
        return RunResult(
            run_id=self.run_id, status=status, n_items=len(self.items),
            n_scored_items=len(self.items) - self.n_reused, n_reused_items=self.n_reused,
            n_new_records=self.progress.records, n_new_errors=self.progress.errors,
            metrics=self.metrics,
        )


def start_run(
    speech_set: SpeechSet,
    metrics: Sequence[Metric] | Sequence[MetricRequest],
    store: Store,
    *,
    device: str = "cpu",
    chunk_size: int = 16,
    retry_errors: bool = False,
    run_name: str | None = None,
    suite: str | None = None,
    params: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    flow_run_id: str | None = None,
    reuse_loaded: bool = False,
) -> ActiveRun:
    """Plan a run and record it in ``store``: load every metric (a missing extra or asset
    stops here, before any work), compute the input keys, ask the store what is already
    scored, and split the rest into length-bucketed chunks.

    Args:
        metrics: metric instances, or :class:`MetricRequest`s (built here for ``device``).
        device: ``cpu``/``cuda`` (resolved) or, with ``reuse_loaded``, ``auto``.
        reuse_loaded: take the metrics from this process's cache (:func:`cached_metrics`),
            shared with the chunks scored in this process, and leave them loaded afterwards.
    """
    if chunk_size < 1:
        raise ConfigError("--chunk-size must be at least 1")
    requests: list[MetricRequest] | None = None
    close = True
    # Load every model before any work: a missing extra or asset stops the command here with
    # instructions, instead of leaving a run with a column missing.
    if metrics and isinstance(metrics[0], MetricRequest):
        requests = list(metrics)  # type: ignore[arg-type]
        if reuse_loaded:
            instances, used_assets = cached_metrics(requests, device)
            close = False
        else:
            instances = build_metrics(requests, device)
            used_assets = load_metrics(instances)
    else:
        instances = list(metrics)  # type: ignore[arg-type]
        used_assets = load_metrics(instances)
    names = [m.spec.name for m in instances]
    if len(set(names)) != len(names):
        raise ConfigError(f"a metric is listed twice: {names}")

    items = list(speech_set)
    keys = [[input_key(it, m) for m in instances] for it in items]
    existing = [
        store.existing(m.spec.name, m.spec.version, m.store_id, ok_only=retry_errors)
        for m in instances
    ]
    todo = [
        [m for m in range(len(instances)) if keys[i][m] not in existing[m]]
        for i in range(len(items))
    ]
    metric_info = [
        {"name": m.spec.name, "version": m.spec.version, "model_id": m.store_id,
         "outputs": list(m.spec.output_names), "device": m.device}
        for m in instances
    ]
    run_id = store.start_run(
        name=run_name or speech_set.name, source=speech_set.source, suite=suite,
        metrics=metric_info, params=dict(params or {}), code_version=code_version(),
        n_items=len(items), assets=dict(used_assets), set_hash=speech_set.content_hash(),
        flow_run_id=flow_run_id,
    )
    store.add_items(run_id, items)
    store.link(
        run_id,
        [
            (it.id, m.spec.name, keys[i][k], m.spec.version, m.store_id)
            for i, it in enumerate(items)
            for k, m in enumerate(instances)
        ],
    )
    pending = [i for i in range(len(items)) if todo[i]]
    reused = len(items) - len(pending)
    # Length-bucketing: similar durations share a chunk (and thus a metric batch).
    pending.sort(key=lambda i: (items[i].frames or 0) / (items[i].sample_rate or 1))
    chunks = [pending[k : k + chunk_size] for k in range(0, len(pending), chunk_size)]
    prog = Progress(total_items=len(items), done_items=reused, reused_items=reused)
    if progress:
        progress(prog)
    return ActiveRun(
        store=store, run_id=run_id, items=items, keys=keys, todo=todo, chunks=chunks,
        metrics=instances, requests=requests, retry_errors=retry_errors, progress=prog,
        on_progress=progress, close_metrics=close,
    )


class Steps:
    """How the engine executes its steps. This base class is the local behaviour: every step
    is a plain call, metrics are loaded once in this process, and chunks are scored here
    (``workers == 1``) or in a pool of ``workers`` spawned processes, committed as they
    finish.

    An orchestrator subclasses it: the Prefect flow (:mod:`speechqe.flows.evaluate`) turns
    each step into a task with its retry policy and scores chunks as tasks on its task runner
    (a thread, or a Dask cluster)."""

    #: take the run's metrics from this process's cache (:func:`cached_metrics`) and leave
    #: them loaded, so that tasks scoring in this process share them
    reuse_loaded: bool = False

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        self.workers = workers

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run library step ``name`` (``open-store``, ``discover``, ``plan``, ``start-run``,
        ``commit-chunk``, ``report``)."""
        return fn(*args, **kwargs)

    def plan_device(self, device: str) -> str:
        """The device the planning process loads its metrics on."""
        return resolve_device(device)

    def message(self, level: str, text: str) -> None:
        """A note for the user (``info`` or ``warning``); the local steps keep quiet (the
        command line shows progress and the summary itself)."""

    def score(self, run: "ActiveRun", device: str) -> Iterator[ChunkResult]:
        """Score every chunk of ``run``, yielding results as they finish (the caller commits
        each before taking the next). ``device`` is the configured one (``auto`` allowed)."""
        if self.workers == 1 or len(run.chunks) <= 1:
            for k in range(len(run.chunks)):
                yield score_work(run.work(k), run.metrics)
            return
        if run.requests is None:
            raise ConfigError("workers > 1 needs MetricRequests (picklable metric recipes)")
        yield from _score_in_pool(run, resolve_device(device), self.workers)


def _score_in_pool(run: "ActiveRun", device: str, workers: int) -> Iterator[ChunkResult]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # fork + torch/onnx threads can deadlock
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker,
        initargs=(run.requests, device, threads),
    ) as pool:
        queue = list(range(len(run.chunks)))
        in_flight: set[Future] = set()
        while queue or in_flight:
            while queue and len(in_flight) < 2 * workers:  # bounded: results are committed as they come
                in_flight.add(pool.submit(_worker_chunk, run.work(queue.pop(0))))
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()


def run_chunks(run: "ActiveRun", steps: Steps, device: str) -> RunResult:
    """Score and commit every chunk of a started run with ``steps``, then finish it
    (``finished``, or ``interrupted``/``failed`` when the loop ends early: the committed
    chunks are kept and a rerun scores the rest)."""
    with run.closing():
        for res in steps.score(run, device):
            steps.call("commit-chunk", ActiveRun.commit, run, res)
    assert run.result is not None
    return run.result


def score(
    speech_set: SpeechSet,
    metrics: Sequence[Metric] | Sequence[MetricRequest],
    store: Store,
    *,
    device: str = "cpu",
    workers: int = 1,
    steps: Steps | None = None,
    chunk_size: int = 16,
    retry_errors: bool = False,
    run_name: str | None = None,
    suite: str | None = None,
    params: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Score ``speech_set`` with ``metrics`` into ``store``; returns the run's summary. (A
    whole evaluation — source, suite, report — is :func:`speechqe.engine.evaluation.evaluate`,
    which runs the same steps.)

    Args:
        metrics: metric instances, or :class:`MetricRequest`s (required when ``workers > 1``).
        device: ``cpu``/``cuda`` (already resolved: see :func:`speechqe.devices.resolve_device`).
        workers: processes scoring chunks in parallel (1: in this process); ignored with
            ``steps``.
        chunk_size: items per committed chunk (and per metric batch).
        retry_errors: rescore items whose stored record is an error (default: reuse it; an
            unreadable file gives the same error again).
    """
    steps = steps or Steps(workers)
    if steps.workers > 1 and not (metrics and isinstance(metrics[0], MetricRequest)):
        raise ConfigError("workers > 1 needs MetricRequests (picklable metric recipes)")
    run = steps.call(
        "start-run", start_run, speech_set, metrics, store, device=device,
        chunk_size=chunk_size, retry_errors=retry_errors, run_name=run_name, suite=suite,
        params=params, progress=progress, reuse_loaded=steps.reuse_loaded,
    )
    return run_chunks(run, steps, device)


def requests_from(entries: Iterable[tuple[str, dict[str, Any]]]) -> list[MetricRequest]:
    return [MetricRequest(ref, tuple(sorted(params.items()))) for ref, params in entries]


@dataclass
class Plan:
    """The metrics a run will compute, and those left out with the reason."""

    requests: list[MetricRequest]
    skipped: list[tuple[str, str]]


def plan_metrics(
    entries: Sequence[Any],
    speech_set: SpeechSet,
    *,
    explicit: bool,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    """Turn suite entries (``.ref``, ``.params``) into metric requests for ``speech_set``.

    A metric that needs references (or transcripts) when the set has none is an error when
    the user named it (``explicit``), and is left out with a stated reason when it comes from a
    suite. Items that individually lack a reference get ``missing_reference`` error records.
    Parameters (the entry's, updated by ``overrides``) are validated here, not in a worker
    (unknown keys and bad values are errors), and requested in canonical form
    (:func:`speechqe.plugins.resolve_params`).
    """
    resolved = plugins.resolve_params(entries, overrides)
    requests, skipped = [], []
    for e, params in zip(entries, resolved):
        name, value = plugins.parse_metric_ref(e.ref)
        cls = plugins.get(name)
        reason = None
        has_target = speech_set.has_references or (
            cls.spec.prompt_as_reference and speech_set.has_prompts
        )
        if cls.spec.needs_reference and not has_target:
            reason = "needs references (--ref DIR or ref_path in the manifest)"
        elif cls.spec.needs_text and not speech_set.has_text:
            reason = "needs transcripts (--text FILE, .txt/.lab beside the audio, or text in the manifest)"
        if reason:
            if explicit:
                raise ConfigError(f"metric '{name}' {reason}")
            skipped.append((name, reason))
            continue
        requests.append(MetricRequest(e.ref, tuple(sorted(params.items()))))
    if not requests:
        raise ConfigError(
            "no metric can run on this speech set: "
            + "; ".join(f"{n} {r}" for n, r in skipped)
        )
    return Plan(requests, skipped)
