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

from speechqe import analysis_cache, assets, plugins
from speechqe.analysis_cache import AnalysisCache
from speechqe.audio import LoadedAudio
from speechqe.devices import is_cuda, resolve_device
from speechqe.errors import (
    ConfigError,
    ItemError,
    MetricComputationError,
    SpeechQEError,
    TooLongError,
    UnexpectedItemError,
    item_error,
)
from speechqe.manifest import AudioItem, SpeechSet
from speechqe.metric import ItemScore, Metric, ScoringInput, too_long
from speechqe.store import ScoreRecord, Store
from speechqe.streaming import STREAM_ABOVE_S, StreamedAudio


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
    """What scoring a chunk produced: its records, item warnings (e.g. clipping), and the
    ``(item_id, scorer, input_key, metric_version, model_id)`` links that attach the records
    to the run's items (written with the records, so that a run only ever shows what it
    computed or found already stored)."""

    records: list[ScoreRecord]
    warnings: dict[str, str] = field(default_factory=dict)
    n_items: int = 0
    links: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    #: already counted in the run's progress (see :meth:`ActiveRun.received`)
    counted: bool = False

    @classmethod
    def merge(cls, parts: Sequence["ChunkResult"]) -> "ChunkResult":
        """One result holding ``parts`` (a batch committed in one transaction)."""
        out = cls(records=[])
        for p in parts:
            out.records += p.records
            out.warnings.update(p.warnings)
            out.n_items += p.n_items
            out.links += p.links
        out.counted = all(p.counted for p in parts)
        return out


def _header_seconds(path: str | None, memo: dict[str, float | None]) -> float | None:
    """A file's duration from its header (``None`` when unreadable: decoding then reports
    the error)."""
    if not path:
        return None
    if path not in memo:
        from speechqe.audio import probe

        try:
            memo[path] = probe(path).duration
        except ItemError:
            memo[path] = None
    return memo[path]


def _too_long(
    item: AudioItem, metric: Metric, memo: dict[str, float | None]
) -> TooLongError | None:
    """The ``too_long`` error of ``metric`` for ``item``, judged from the file headers (the
    signal; the reference and prompt when the metric uses them) before anything is decoded."""
    limit = metric.max_seconds()
    if limit is None:
        return None
    files = [("", item.duration)]
    if metric.spec.needs_reference:
        files += [(" (reference)", _header_seconds(item.ref_path, memo)),
                  (" (prompt)", _header_seconds(item.prompt_path, memo))]
    for what, seconds in files:
        if seconds is not None and seconds > limit:
            return too_long(metric, seconds, what)
    return None


def _open(path: str, stream: bool) -> LoadedAudio | StreamedAudio:
    return StreamedAudio.open(path) if stream else LoadedAudio.from_file(path)


def _streams(seconds: float | None, metrics: Sequence[Metric]) -> bool:
    """Whether a signal of ``seconds`` is read window by window: it is long, and every metric
    that will use it is windowed (declares no maximum)."""
    return (
        seconds is not None and seconds > STREAM_ABOVE_S
        and all(m.max_seconds() is None for m in metrics)
    )


def score_chunk(
    items: Sequence[AudioItem],
    todo: Sequence[Sequence[int]],
    metrics: Sequence[Metric | None],
    keys: Sequence[Sequence[str]],
    analyses: AnalysisCache | None = None,
) -> ChunkResult:
    """Score ``items``; ``todo[i]`` lists the indices of the metrics pending for item ``i`` and
    ``keys[i][m]`` is item ``i``'s input key for metric ``m`` (``metrics[m]`` may be ``None``
    for a metric no item of the chunk needs).

    Every (item, pending metric) pair gives records for all the metric's outputs: values, or
    errors with their reason. Length rules come first, from the file headers: a metric that
    refuses an item's length records ``too_long`` and the file is not decoded for it; an item
    that only windowed metrics score and that is longer than
    :data:`speechqe.streaming.STREAM_ABOVE_S` is streamed instead of decoded whole. Only
    ``BaseException``s that are not ``Exception`` (Ctrl-C, SystemExit) escape.

    Args:
        analyses: the run's reference-analysis cache, handed to every :class:`ScoringInput`.
    """
    records: list[ScoreRecord] = []
    warnings: dict[str, str] = {}
    links: list[tuple[str, str, str, str, str]] = []
    inputs: list[ScoringInput | None] = []
    active: list[list[int]] = []
    ref_errors: dict[int, ItemError] = {}
    headers: dict[str, float | None] = {}
    for i, item in enumerate(items):
        pending = list(todo[i])
        for m in pending:
            met = metrics[m]
            links.append((item.id, met.spec.name, keys[i][m], met.spec.version, met.store_id))
        if item.error is not None:  # header unreadable at manifest time
            exc = item_error(item.error_type or "unreadable", item.error)
            for m in pending:
                records += _error_records(item, metrics[m], keys[i][m], exc)
            inputs.append(None)
            active.append([])
            continue
        # Length rules, from the headers, before any decoding.
        kept = []
        for m in pending:
            err = _too_long(item, metrics[m], headers)
            if err is None:
                kept.append(m)
            else:
                records += _error_records(item, metrics[m], keys[i][m], err)
        active.append(kept)
        if not kept:
            inputs.append(None)
            continue
        users = [metrics[m] for m in kept]
        try:
            if item.segment is None and item.channel is None:
                audio = _open(item.path, _streams(item.duration, users))
            else:  # only the item's segment and channel, decoded (never streamed)
                audio = item.load()
        except ItemError as exc:
            for m in kept:
                records += _error_records(item, metrics[m], keys[i][m], exc)
            inputs.append(None)
            active[i] = []
            continue
        if audio.check.warnings:
            warnings[item.id] = "; ".join(audio.check.warnings)
        inp = ScoringInput(item=item, audio=audio, analyses=analyses)
        ref_users = [u for u in users if u.spec.needs_reference]
        if ref_users:
            try:
                if item.ref_path:
                    inp.ref = _open(item.ref_path, _streams(
                        _header_seconds(item.ref_path, headers), ref_users))
                if item.prompt_path:
                    inp.prompt = _open(item.prompt_path, _streams(
                        _header_seconds(item.prompt_path, headers), ref_users))
            except ItemError as exc:
                ref_errors[i] = exc
        inputs.append(inp)

    for m, metric in enumerate(metrics):
        if metric is None:
            continue
        batch: list[tuple[int, ScoringInput]] = []
        for i, inp in enumerate(inputs):
            if inp is None or m not in active[i]:
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
    return ChunkResult(records=records, warnings=warnings, n_items=len(items), links=links)


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


#: ``ChunkWork.analyses`` meaning "keep reference analyses in memory only" (``--analysis-cache off``).
NO_DISK = ""


@dataclass(frozen=True)
class ChunkWork:
    """What one chunk needs to be scored anywhere (a small picklable record): the items, the
    indices of the metrics pending for each item, each item's input keys, and the folder of
    the run's reference-analysis cache (:data:`NO_DISK`: in memory only)."""

    items: tuple[AudioItem, ...]
    todo: tuple[tuple[int, ...], ...]
    keys: tuple[tuple[str, ...], ...]
    analyses: str = NO_DISK

    def __len__(self) -> int:
        return len(self.items)

    @property
    def needed(self) -> set[int]:
        """The indices of the metrics this chunk runs."""
        return {m for t in self.todo for m in t}

    @property
    def cost(self) -> float:
        """Estimated work: seconds of audio, counting each distinct reference once more (its
        analysis) for items with a metric pending."""
        refs = {it.ref_sha256 or it.ref_path for it in self.items if it.ref_path}
        per_ref = {it.ref_sha256 or it.ref_path: (it.duration or 1.0) for it in self.items}
        return sum((it.duration or 1.0) for it in self.items) + sum(per_ref[r] for r in refs)

    def only(self, metrics: set[int]) -> "ChunkWork":
        """This chunk restricted to the metric indices ``metrics`` (items left without any
        are dropped)."""
        keep = [k for k, t in enumerate(self.todo) if set(t) & metrics]
        return ChunkWork(
            tuple(self.items[k] for k in keep),
            tuple(tuple(m for m in self.todo[k] if m in metrics) for k in keep),
            tuple(self.keys[k] for k in keep), self.analyses,
        )


def work_cache(work: ChunkWork) -> AnalysisCache:
    """This process's analysis cache for ``work`` (kept across chunks and runs)."""
    return analysis_cache.shared(work.analyses or None)


def score_work(work: ChunkWork, metrics: Sequence[Metric | None]) -> ChunkResult:
    """:func:`score_chunk` on a :class:`ChunkWork`."""
    return score_chunk(work.items, work.todo, metrics, work.keys, analyses=work_cache(work))


def score_work_with(
    requests: Sequence[MetricRequest], device: str, work: ChunkWork
) -> ChunkResult:
    """Score ``work`` with this process's cached metrics for ``requests`` (see
    :func:`cached_metrics`): the unit of work of a Prefect or Dask task."""
    return score_work(work, cached_metrics(requests, device)[0])


# --- worker processes of the local pool -------------------------------------------------------
#: this worker's metric recipes, device, the metrics built so far (by index) and the error that
#: stopped its start, if any (raised with each unit of work instead of breaking the pool)
_WORKER: dict[str, Any] = {}


def _init_worker(requests: Sequence[MetricRequest], device: str, threads: int,
                 needed: Sequence[int] = ()) -> None:
    """Worker start: the threads each library may use (the pool is sized to the cores),
    Ctrl-C left to the parent (which stops the pool and records the run as interrupted), and
    the ``needed`` metrics of this worker's lane loaded
    (others, if ever asked for, on first use: :func:`_worker_metrics`)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # torch, ONNX Runtime and CTranslate2 read it when they load (none is imported here: a
    # worker that only runs signal metrics never pays for torch)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _WORKER.update(requests=list(requests), device=device, metrics=[None] * len(requests),
                   error=None)
    try:  # load now, while the parent is still planning; a failure is raised with the work
        _worker_metrics(set(needed))
    except Exception as exc:  # noqa: BLE001 - re-raised by _worker_chunk, not a dead pool
        _WORKER["error"] = exc


def _worker_metrics(needed: set[int]) -> list[Metric | None]:
    """The metrics of this worker, building (and loading) those in ``needed`` on first use: a
    worker that only ever scores CPU metrics never loads a neural model."""
    metrics = _WORKER["metrics"]
    for m in sorted(needed):
        if metrics[m] is None:
            r = _WORKER["requests"][m]
            metrics[m] = build_metrics([r], _WORKER["device"])[0]
            metrics[m].ensure_ready()
    return metrics


def _started() -> None:
    """A no-op submitted once per worker so that the pool spawns its processes at once."""


def _worker_chunk(work: ChunkWork) -> ChunkResult:
    assert _WORKER, "worker not initialised"
    if _WORKER.get("error") is not None:
        raise _WORKER["error"]
    return score_work(work, _worker_metrics(work.needed))


# ------------------------------------------------------------------------------------------
# Runs: start (plan) -> chunks -> commit -> finish
# ------------------------------------------------------------------------------------------
#: Scored results are committed when this many seconds have passed since the last commit, or
#: when a run's ``chunk_size`` items are waiting, whichever comes first (and at the end, and
#: when the run is interrupted): few transactions, little work lost to a kill.
COMMIT_INTERVAL_S = 2.0
#: While no item finishes, the progress callback still hears from the run this often.
HEARTBEAT_S = 5.0
#: With ``workers`` unset (auto), less pending audio than this (seconds) is scored in this
#: process: starting a worker costs a few seconds (imports, models), more than it saves.
MIN_POOL_AUDIO_S = 60.0


@dataclass
class Progress:
    """Progress of a run, passed to the ``progress`` callback whenever items finish (and every
    :data:`HEARTBEAT_S` seconds while none does).

    Attributes:
        total_items: items in the run.
        done_items: items finished (scored, or reused from the store).
        committed_items: items whose records are in the store (reused included).
        records, errors: new records and error records so far.
        reused_items: items whose records were all in the store already.
        in_flight: items being scored right now (by the pool).
    """

    total_items: int
    done_items: int = 0
    records: int = 0
    errors: int = 0
    reused_items: int = 0
    started: float = field(default_factory=time.monotonic)
    committed_items: int = 0
    in_flight: int = 0
    run_id: str = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


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
    n_committed_items: int = 0


def uses_gpu(metrics: Sequence[Metric] | Sequence[MetricRequest], device: str) -> bool:
    """Whether scoring with ``metrics`` on ``device`` (``cpu``/``cuda``/``auto``) may occupy a
    GPU: the device is not ``cpu`` and some metric declares ``device='cuda'``."""
    if device == "cpu":
        return False
    return bool(gpu_metrics(metrics))


def gpu_metrics(metrics: Sequence[Metric] | Sequence[MetricRequest]) -> set[int]:
    """Indices of the metrics that declare ``device='cuda'``."""
    out = set()
    for k, m in enumerate(metrics):
        cls = (
            plugins.get(plugins.parse_metric_ref(m.ref)[0])
            if isinstance(m, MetricRequest) else type(m)
        )
        if cls.spec.device == "cuda":
            out.add(k)
    return out


class WorkerLostError(SpeechQEError):
    """A worker process died while scoring (killed by the system, e.g. out of memory)."""


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
    chunk_size: int = 16
    #: reference-analysis cache folder (:data:`NO_DISK`: in memory only)
    analyses: str = NO_DISK

    @property
    def n_reused(self) -> int:
        return self.progress.reused_items

    @property
    def pending(self) -> list[int]:
        """Indices of the items with something to score, in chunk order."""
        return [i for c in self.chunks for i in c]

    def work(self, k: int) -> ChunkWork:
        """Chunk ``k`` as a picklable :class:`ChunkWork`."""
        return self.work_of(self.chunks[k])

    def work_of(self, indices: Sequence[int]) -> ChunkWork:
        """The items ``indices`` as a picklable :class:`ChunkWork`."""
        return ChunkWork(
            tuple(self.items[i] for i in indices),
            tuple(tuple(self.todo[i]) for i in indices),
            tuple(tuple(self.keys[i]) for i in indices),
            self.analyses,
        )

    def received(self, res: ChunkResult, *, notify: bool = True) -> None:
        """Count a scored chunk (before it is committed) and tell the progress callback."""
        prog = self.progress
        prog.done_items += res.n_items
        prog.records += len(res.records)
        prog.errors += sum(1 for r in res.records if r.status == "error")
        res.counted = True
        if notify:
            self.notify()

    def notify(self) -> None:
        """Call the progress callback (also while nothing finishes: a heartbeat)."""
        if self.on_progress:
            self.on_progress(self.progress)

    def commit(self, res: ChunkResult) -> None:
        """Write a scored chunk (or a batch of them) in one transaction: its records, item
        warnings and the links that attach them to this run."""
        self.store.write(self.run_id, res.records, res.warnings, replace=self.retry_errors,
                         links=res.links)
        if not res.counted:  # committed without passing through run_chunks (flows, tests)
            self.received(res, notify=False)
        self.progress.committed_items += res.n_items
        self.notify()

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
            metrics=self.metrics, n_committed_items=self.progress.committed_items,
        )


def resolve_analysis_cache(setting: str | Path | None, store: Store) -> str:
    """The analysis-cache folder of a run: ``None``/``'default'`` -> ``analysis-cache/``
    beside the store; ``'off'`` -> :data:`NO_DISK` (in memory, this run only); else the
    given folder."""
    if setting is None or str(setting) == "default":
        return str(analysis_cache.default_root(store.path))
    if str(setting) == "off":
        return NO_DISK
    return str(Path(setting).expanduser().resolve())


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
    analysis_cache: str | Path | None = None,
    on_pending: Callable[[list[AudioItem], list[MetricRequest] | None, str], None] | None = None,
) -> ActiveRun:
    """Plan a run and record it in ``store``: load every metric (a missing extra or asset
    stops here, before any work), compute the input keys, ask the store what is already
    scored, and split the rest into length-bucketed chunks.

    The run is linked at once to the records it reuses; the records it computes are linked as
    they are committed, so an interrupted run never shows records that a later run computed.

    Args:
        metrics: metric instances, or :class:`MetricRequest`s (built here for ``device``).
        device: ``cpu``/``cuda`` (resolved) or, with ``reuse_loaded``, ``auto``.
        reuse_loaded: take the metrics from this process's cache (:func:`cached_metrics`),
            shared with the chunks scored in this process, and leave them loaded afterwards.
        analysis_cache: where reference analyses are kept across runs (see
            :func:`resolve_analysis_cache`; default: ``analysis-cache/`` beside the store).
        on_pending: called with the pending items, the requests and ``device`` once they are
            known and before the metrics are loaded here (:meth:`Steps.prepare` starts the
            worker pool then, so that the workers load theirs at the same time).
    """
    if chunk_size < 1:
        raise ConfigError("--chunk-size must be at least 1")
    requests: list[MetricRequest] | None = None
    close = True
    # Load every model before any work: a missing extra or asset stops the command here with
    # instructions, instead of leaving a run with a column missing.
    used_assets: dict[str, Any] = {}
    if metrics and isinstance(metrics[0], MetricRequest):
        requests = list(metrics)  # type: ignore[arg-type]
        if reuse_loaded:
            instances, used_assets = cached_metrics(requests, device)
            close = False
        else:
            instances = build_metrics(requests, device)
    else:
        instances = list(metrics)  # type: ignore[arg-type]
    names = [m.spec.name for m in instances]
    if len(set(names)) != len(names):
        raise ConfigError(f"a metric is listed twice: {names}")

    items = list(speech_set)
    with assets.recording_resolved() as resolved:
        keys = [[input_key(it, m) for m in instances] for it in items]  # model ids: may load
        existing = [
            store.existing(m.spec.name, m.spec.version, m.store_id, ok_only=retry_errors)
            for m in instances
        ]
        todo = [
            [m for m in range(len(instances)) if keys[i][m] not in existing[m]]
            for i in range(len(items))
        ]
        if on_pending is not None:
            on_pending([it for i, it in enumerate(items) if todo[i]], requests, device)
        for m in instances:
            m.ensure_ready()
    used_assets = {**dict(resolved), **used_assets}
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
            if k not in todo[i]
        ],
    )
    pending = [i for i in range(len(items)) if todo[i]]
    reused = len(items) - len(pending)
    # Length-bucketing: similar durations share a chunk (and thus a metric batch).
    pending.sort(key=lambda i: (items[i].frames or 0) / (items[i].sample_rate or 1))
    chunks = [pending[k : k + chunk_size] for k in range(0, len(pending), chunk_size)]
    prog = Progress(total_items=len(items), done_items=reused, reused_items=reused,
                    committed_items=reused, run_id=run_id)
    if progress:
        progress(prog)
    return ActiveRun(
        store=store, run_id=run_id, items=items, keys=keys, todo=todo, chunks=chunks,
        metrics=instances, requests=requests, retry_errors=retry_errors, progress=prog,
        on_progress=progress, close_metrics=close, chunk_size=chunk_size,
        analyses=resolve_analysis_cache(analysis_cache, store),
    )


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def units(run: ActiveRun, metrics: set[int] | None = None, *, by_reference: bool = True,
          size: int | None = None) -> list[ChunkWork]:
    """The pending work of ``run`` as :class:`ChunkWork` units, costliest first.

    With ``by_reference`` (CPU scoring), the items that share a reference (or prompt) form one
    unit of at most ``size`` items (default: the run's chunk size), so the reference is
    analysed once, in one process, and the others read it from the analysis cache; other
    items are units of one. Otherwise (batched GPU scoring) the run's length-bucketed chunks
    are the units. Units are ordered by :attr:`ChunkWork.cost`, largest first, so that the
    slowest analyses start first and the last units to finish are short.

    Args:
        metrics: restrict the units to these metric indices (default: all).
    """
    size = size or run.chunk_size
    pending = run.pending
    if metrics is not None:
        pending = [i for i in pending if set(run.todo[i]) & metrics]
    if by_reference:
        groups: dict[Any, list[int]] = {}
        for i in pending:
            it = run.items[i]
            uses_ref = any(run.metrics[m].spec.needs_reference for m in run.todo[i]
                           if metrics is None or m in metrics)
            target = (it.ref_sha256 or it.ref_path or it.prompt_sha256 or it.prompt_path) \
                if uses_ref else None
            groups.setdefault(("ref", target) if target else ("item", i), []).append(i)
        parts = [g[k: k + size] for g in groups.values() for k in range(0, len(g), size)]
    else:
        parts = [pending[k: k + size] for k in range(0, len(pending), size)]
    works = [run.work_of(p) for p in parts]
    if metrics is not None:
        works = [w.only(metrics) for w in works]
    works = [w for w in works if len(w)]
    return sorted(works, key=lambda w: -w.cost)


class Steps:
    """How the engine executes its steps. This base class is the local behaviour: every step
    is a plain call, metrics are loaded once in this process, and the pending items are scored
    here or by a pool of worker processes sized to the cores, the costliest first, results
    committed in batches as they arrive.

    An orchestrator subclasses it: the Prefect flow (:mod:`speechqe.flows.evaluate`) turns
    each step into a task with its retry policy and scores chunks as tasks on its task runner
    (a thread, or a Dask cluster)."""

    #: take the run's metrics from this process's cache (:func:`cached_metrics`) and leave
    #: them loaded, so that tasks scoring in this process share them
    reuse_loaded: bool = False

    def __init__(self, workers: int | None = None, *, gpu_lane: bool | None = None):
        """
        Args:
            workers: worker processes (``None``: one per usable core when at least
                :data:`MIN_POOL_AUDIO_S` seconds of audio are pending, else this process).
            gpu_lane: score the metrics that run on the GPU in a process of their own, in
                batches of the chunk size, while the CPU metrics run in the pool (``None``:
                when the device is a GPU and there is a pool; ``True`` forces it, e.g. to test
                the split on a CPU).
        """
        if workers is not None and workers < 1:
            raise ConfigError("--workers must be at least 1")
        self.workers = workers
        self.gpu_lane = gpu_lane
        self._pools: list[tuple[Lane, ProcessPoolExecutor]] | None = None

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

    def pool_size(self, n_items: int, audio_seconds: float) -> int:
        """Worker processes for ``n_items`` pending items holding ``audio_seconds`` of audio
        (1: score in this process)."""
        if self.workers is not None:
            return max(1, min(self.workers, n_items))
        if audio_seconds < MIN_POOL_AUDIO_S or n_items < 2:
            return 1
        return max(1, min(usable_cores(), n_items))

    def lanes(self, requests: Sequence[MetricRequest], device: str, n: int) -> list["Lane"]:
        """The pools for ``n`` workers: one of ``n`` processes for every metric; or, with the
        GPU lane, one process for the metrics that run on the GPU and ``n`` for the others."""
        gpu = gpu_metrics(requests) if (is_cuda(device) or self.gpu_lane) else set()
        cores = usable_cores()
        if not gpu or self.gpu_lane is False:
            return [Lane(n, device, max(1, cores // n), None)]
        cpu = set(range(len(requests))) - gpu
        threads = max(1, cores // (n + 1))
        out = [Lane(1, device if is_cuda(device) else "cpu", threads, gpu, batched=True)]
        if cpu:
            out.append(Lane(n, "cpu", threads, cpu))
        return out

    def prepare(self, items: Sequence[AudioItem], requests: Sequence[MetricRequest] | None,
                device: str) -> None:
        """Called by :func:`start_run` as soon as the pending ``items`` are known, before the
        planning process loads its own metrics: start the worker pool now, so that the
        workers load theirs meanwhile (a run with nothing to score starts none)."""
        if requests is None or self._pools is not None:
            return
        n = self.pool_size(len(items), sum((it.duration or 0.0) for it in items))
        if n <= 1:
            return
        dev = resolve_device(device)
        self._pools = [(lane, lane.start(requests)) for lane in self.lanes(requests, dev, n)]

    def close(self) -> None:
        """Stop a pool that was started but not used (the run failed before scoring)."""
        pools, self._pools = self._pools, None
        for _lane, pool in pools or ():
            _stop(pool)

    def score(self, run: "ActiveRun", device: str) -> Iterator[ChunkResult | None]:
        """Score every pending item of ``run``, yielding results as they finish (the caller
        commits them in batches), or ``None`` every :data:`HEARTBEAT_S` seconds while none
        does. ``device`` is the configured one (``auto`` allowed)."""
        if self._pools is None and run.requests is not None:
            self.prepare([run.items[i] for i in run.pending], run.requests, device)
        if self._pools is None:
            if self.workers is not None and self.workers > 1 and run.requests is None \
                    and len(run.pending) > 1:
                raise ConfigError("workers > 1 needs MetricRequests (picklable metric recipes)")
            # In this process: GPU metrics keep their batches (the length-bucketed chunks);
            # on the CPU, units of one reference group give finer progress and the same records.
            dev = device if device == "cpu" else resolve_device(device)
            work = ([run.work(k) for k in range(len(run.chunks))] if uses_gpu(run.metrics, dev)
                    else units(run))
            for w in work:
                run.progress.in_flight = len(w)
                yield score_work(w, run.metrics)
            run.progress.in_flight = 0
            return
        if run.close_metrics:
            for m in run.metrics:  # the workers load their own; free this process's copies
                m.close()
        pools, self._pools = self._pools, None
        yield from _pooled(run, [
            (pool, lane.processes, units(run, lane.metrics, by_reference=not lane.batched))
            for lane, pool in pools
        ])


@dataclass(frozen=True)
class Lane:
    """A pool of worker processes: how many, on which device, with how many threads each, and
    the indices of the metrics it runs (``None``: all)."""

    processes: int
    device: str
    threads: int
    metrics: frozenset[int] | set[int] | None
    #: units are the run's length-bucketed chunks (GPU batches), not reference groups
    batched: bool = False

    def start(self, requests: Sequence[MetricRequest]) -> ProcessPoolExecutor:
        """Start the processes now (the executor would only spawn them as work arrives); each
        loads this lane's metrics as it starts."""
        needed = sorted(self.metrics) if self.metrics is not None else list(range(len(requests)))
        pool = ProcessPoolExecutor(
            max_workers=self.processes, mp_context=mp.get_context("spawn"),  # fork + torch/onnx
            initializer=_init_worker,                                         # threads deadlock
            initargs=(list(requests), self.device, self.threads, needed),
        )
        for _ in range(self.processes):
            pool.submit(_started)
        return pool


def _pooled(run: "ActiveRun", lanes: list[tuple[ProcessPoolExecutor, int, list[ChunkWork]]]
            ) -> Iterator[ChunkResult | None]:
    """Score the units of each lane ``(pool, processes, units)``, at most two units per
    process in flight (bounded memory: results are committed as they come), yielding results
    as they finish and ``None`` as a heartbeat. The pools are shut down at the end; on Ctrl-C
    or any error they are stopped at once (their work is lost; the committed results are
    kept)."""
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    pools = [pool for pool, _n, _w in lanes]
    queues = [deque(work) for _p, _n, work in lanes]
    limits = [2 * n for _p, n, _w in lanes]
    per_lane = [0] * len(lanes)
    in_flight: dict[Future, tuple[int, ChunkWork]] = {}
    finished = False
    try:
        def top_up() -> None:
            for k, pool in enumerate(pools):
                while queues[k] and per_lane[k] < limits[k]:
                    w = queues[k].popleft()
                    in_flight[pool.submit(_worker_chunk, w)] = (k, w)
                    per_lane[k] += 1
            run.progress.in_flight = sum(len(w) for _, w in in_flight.values())

        top_up()
        while in_flight:
            done, _ = wait(list(in_flight), timeout=HEARTBEAT_S, return_when=FIRST_COMPLETED)
            if not done:
                yield None
                continue
            for fut in done:
                k, w = in_flight.pop(fut)
                per_lane[k] -= 1
                try:
                    res = fut.result()
                except BrokenProcessPool as exc:
                    raise WorkerLostError(
                        f"a scoring worker process died (killed by the system, e.g. out of "
                        f"memory, or crashed) while scoring {len(w)} item(s), the first "
                        f"{w.items[0].id!r}; the results committed so far are kept: rerun to "
                        "resume"
                    ) from exc
                top_up()
                yield res
        finished = True
    finally:
        run.progress.in_flight = 0
        for pool in pools:
            if finished:
                pool.shutdown(wait=True)
            else:
                _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: drop the queued work and end its processes (a scoring call cannot be
    interrupted any other way; what it was computing is lost, never half-written)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's executor
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


def run_chunks(run: "ActiveRun", steps: Steps, device: str) -> RunResult:
    """Score every pending item of a started run with ``steps``, committing the results in
    batches (every :data:`COMMIT_INTERVAL_S` seconds or ``chunk_size`` items), then finish it
    (``finished``; ``interrupted`` on Ctrl-C, ``failed`` on an error: what was scored by then
    is committed first, and a rerun scores the rest)."""
    batch: list[ChunkResult] = []
    last = time.monotonic()

    def flush() -> None:
        nonlocal batch, last
        last = time.monotonic()
        if batch:
            todo, batch = ChunkResult.merge(batch), []
            steps.call("commit-chunk", ActiveRun.commit, run, todo)

    with run.closing():
        results = steps.score(run, device)
        try:
            for res in results:
                if res is not None:
                    run.received(res)
                    batch.append(res)
                else:
                    run.notify()
                if (sum(r.n_items for r in batch) >= run.chunk_size
                        or time.monotonic() - last >= COMMIT_INTERVAL_S):
                    flush()
        except BaseException:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stop the pool before committing what arrived
            try:
                flush()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            raise
        flush()
    assert run.result is not None
    return run.result


def score(
    speech_set: SpeechSet,
    metrics: Sequence[Metric] | Sequence[MetricRequest],
    store: Store,
    *,
    device: str = "cpu",
    workers: int | None = 1,
    steps: Steps | None = None,
    chunk_size: int = 16,
    retry_errors: bool = False,
    run_name: str | None = None,
    suite: str | None = None,
    params: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    analysis_cache: str | Path | None = None,
) -> RunResult:
    """Score ``speech_set`` with ``metrics`` into ``store``; returns the run's summary. (A
    whole evaluation — source, suite, report — is :func:`speechqe.engine.evaluation.evaluate`,
    which runs the same steps.)

    Args:
        metrics: metric instances, or :class:`MetricRequest`s (required when ``workers > 1``).
        device: ``cpu``/``cuda`` (already resolved: see :func:`speechqe.devices.resolve_device`).
        workers: processes scoring in parallel (1: in this process; ``None``: one per core
            when there is enough work); ignored with ``steps``.
        chunk_size: items per committed batch (and per metric batch on a GPU).
        retry_errors: rescore items whose stored record is an error (default: reuse it; an
            unreadable file gives the same error again).
        analysis_cache: where reference analyses are kept (default: beside the store; ``off``).
    """
    steps = steps or Steps(workers)
    is_requests = bool(metrics) and isinstance(metrics[0], MetricRequest)
    if steps.workers is not None and steps.workers > 1 and not is_requests:
        raise ConfigError("workers > 1 needs MetricRequests (picklable metric recipes)")
    if steps.workers is None and not is_requests:
        steps.workers = 1  # instances cannot be sent to workers
    try:
        run = steps.call(
            "start-run", start_run, speech_set, metrics, store, device=device,
            chunk_size=chunk_size, retry_errors=retry_errors, run_name=run_name, suite=suite,
            params=params, progress=progress, reuse_loaded=steps.reuse_loaded,
            analysis_cache=analysis_cache, on_pending=steps.prepare,
        )
        return run_chunks(run, steps, device)
    finally:
        steps.close()


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
