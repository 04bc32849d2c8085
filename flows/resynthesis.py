"""The ``resynthesis-eval`` flow: orchestration only.

    load-originals -> per codebook/vocoder pair: check-output, resynthesize (GPU-tagged)
      -> combine-outputs -> evaluate-speech-set (subflow: the same scoring path, store and
      resume as every evaluation) -> compare (bitrate beside quality) -> publish-artifacts

Every step is one call into :mod:`speechqe.vocoders.resynth` or the evaluation flow; the
policy sits on the decorators, as in :mod:`speechqe.flows.evaluate`:

* Reading the originals and the outputs, and writing the comparison, are I/O tasks that retry
  (never on a :class:`~speechqe.errors.ConfigError`).
* Resynthesis does not retry (a failing pair is a bad checkpoint or a lost device; a rerun
  resumes at the first unfinished pair) and carries the tag ``speechqe-gpu`` on a GPU, so
  the ``tag:speechqe-gpu`` concurrency limit bounds it with every scoring task.
* Work is keyed by the outputs and the store, not by Prefect's result cache:
  :func:`~speechqe.vocoders.resynth.finished_output` says whether a pair's folder already holds
  what resynthesis would write again (same originals, codebook, checkpoint and options), and
  the scoring subflow asks the results store which records exist. A rerun with nothing
  changed vocodes nothing and scores nothing.
* Tasks receive and return paths and small records; the originals' speech set stays in the
  flow process and is passed to its in-process tasks unexamined (``quote``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from speechqe.devices import resolve_device
from speechqe.errors import ConfigError
from speechqe.engine.evaluation import EvaluationConfig, artifact_key

from .evaluate import _IO_RETRIES, GPU_TAG, ensure_gpu_limit, evaluate_speech_set


def _resynth():
    from speechqe.vocoders import resynth

    return resynth


def _scoring():
    from speechqe.engine import resynthesis

    return resynthesis


# ------------------------------------------------------------------------------------------
# Tasks: each wraps one library call
# ------------------------------------------------------------------------------------------
@task(name="load-originals", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def load_originals(source: str, transcripts: str | None):
    """Read headers, hash contents, attach transcripts."""
    from speechqe.manifest import load_speech_set

    return load_speech_set(source, text_file=transcripts)


@task(name="check-output", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES,
      task_run_name="check-{label}")
def check_output(sset, codebook: str, vocoder: str, out_dir: str, opts, label: str,
                 fit_set=None) -> dict[str, Any] | None:
    """The pair's recorded output when it is what resynthesis would write again, else None."""
    info = _resynth().finished_output(out_dir, sset, codebook, vocoder, opts, fit_set)
    return None if info is None else _pair_info(info["system"], len(sset), info["errors"])


def _pair_info(system: str, n_items: int, errors) -> dict[str, Any]:
    return {"system": system, "n_items": n_items, "n_errors": len(errors)}


@task(name="resynthesize", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="resynthesize-{label}")
def resynthesize(sset, codebook: str, vocoder: str, out_dir: str, opts, label: str,
                 fit_set=None) -> dict[str, Any]:
    """Encode, vocode (fitting a ``world``/``knn`` vocoder on ``fit_set`` first) and write one
    pair's outputs; returns its system and error count."""
    lib = _resynth()
    cb, src, voc = lib.load_pair(codebook, vocoder, device=opts.device, fit_set=fit_set,
                                 opts=opts, save_dir=out_dir)
    res = lib.resynthesize(sset, src, cb, voc, out_dir, opts)
    return _pair_info(res.system, len(res.speech_set), res.errors)


@task(name="combine-outputs", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def combine_outputs(outputs: list[str], path: str, name: str) -> str:
    return str(_resynth().combine_outputs(outputs, path, name))


@task(name="compare", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def compare(store: str, run_id: str, outputs: list[str], path: str) -> list[dict[str, Any]]:
    """Bitrate beside every metric's mean, one row per pair (also written to ``path``)."""
    import json

    from speechqe.engine import resynthesis

    rows = resynthesis.comparison_table(resynthesis.run_result(store, run_id, outputs))
    Path(path).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


@task(name="publish-artifacts", cache_policy=NO_CACHE, **_IO_RETRIES)
def publish_artifacts(key: str, rows: list[dict[str, Any]], run_id: str) -> None:
    create_markdown_artifact(
        markdown=_scoring().comparison_markdown(rows, f"Resynthesis (run {run_id})"), key=key,
        description=f"speechqe resynthesis run {run_id}: bitrate beside quality per pair")


# ------------------------------------------------------------------------------------------
# The flow
# ------------------------------------------------------------------------------------------
def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    p = dict(flow_run.parameters)
    name = str(p.get("name") or "resynthesis")
    n = len(p.get("codebooks") or ())
    return f"{name}-{n}pair{'s' if n != 1 else ''}-{datetime.now(timezone.utc):%Y%m%dT%H%M}"


@flow(name="resynthesis-eval", flow_run_name=_flow_run_name, validate_parameters=True)
def resynthesis_eval(
    source: str,
    codebooks: list[str],
    vocoders: list[str],
    out: str,
    store: str | None = None,
    suite: str | None = None,
    metrics: list[str] | None = None,
    transcripts: str | None = None,
    name: str = "resynthesis",
    device: str = "auto",
    dedup: bool = False,
    predict_durations: bool = False,
    batch_size: int = 8,
    chunk_size: int = 16,
    retry_errors: bool = False,
    report: bool = True,
    gpu_slots: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    fit: str | None = None,
    f0: str = "source",
    knn_k: int = 4,
    knn_inputs: str = "continuous",
) -> dict[str, Any]:
    """Resynthesise a speech set with each codebook/vocoder pair, score the outputs against
    the originals, and compare the pairs: bitrate beside quality.

    Args:
        source: the originals (folder, ``.jsonl`` or SHEET ``.csv``).
        codebooks, vocoders: the pairs, in order (unit codebook ``.npz``; unit HiFi-GAN
            checkpoint file or folder, a WORLD unit vocoder ``.safetensors``, or ``world`` /
            ``knn``, training-free vocoders fitted on ``fit``).
        out: pair ``k`` writes to ``out/pair<k>/`` (waveforms, manifest, units, bitrate);
            ``out/resynthesis.jsonl`` lists every pair's outputs, ``out/comparison.json`` is
            the table.
        store: the results store (default ``out/resynth.duckdb``).
        suite, metrics: what to score (not both; neither: the registered resynthesis defaults,
            :data:`speechqe.engine.resynthesis.DEFAULT_METRICS`).
        transcripts: ``id<TAB>text`` lines of the originals (for WER/CER).
        name: the store's run name (the history groups by it).
        device: ``auto``, ``cpu`` or ``cuda`` for the encoders, the vocoders and scoring.
        dedup, predict_durations, batch_size: :class:`~speechqe.vocoders.resynth.ResynthOptions`.
        chunk_size, retry_errors, report, gpu_slots, params: as ``evaluate-speech-set``.
        fit: the speech set ``world`` is fitted on, or ``knn``'s target matching set.
        f0, knn_k, knn_inputs: :class:`~speechqe.vocoders.resynth.ResynthOptions`.

    Returns:
        ``{"run_id", "store", "pairs": [{"system", "out", "status": "resynthesized" |
        "reused", ...}], "comparison": rows, "n_scored_items", "n_reused_items", "report"}``.
    """
    log = get_run_logger()
    lib = _resynth()

    # Everything that can be checked without reading audio is checked before any work.
    pairs = lib.check_pairs(codebooks, vocoders, fit)
    if not str(out).strip():
        raise ConfigError("out: give a folder for the outputs")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out: {out_dir} is a file, not a folder")
    names = metrics
    if not suite:  # a suite with metrics is refused below, by the evaluation's config
        names, missing = _scoring().choose_metrics(metrics)
        if missing:
            log.warning("not registered, left out: %s", ", ".join(missing))
    scoring = dict(
        source=str(out_dir / lib.MANIFEST_NAME), suite=suite, metrics=names,
        store=str(store or out_dir / lib.STORE_NAME), name=name, device=device,
        chunk_size=chunk_size, retry_errors=retry_errors, report=report, gpu_slots=gpu_slots,
        params=params,
    )
    EvaluationConfig.create(**scoring)
    resolved = resolve_device(device)
    opts = lib.ResynthOptions(dedup=dedup or predict_durations,
                              durations="predict" if predict_durations else "keep",
                              batch_size=batch_size, device=resolved, f0=f0, knn_k=knn_k,
                              knn_inputs=knn_inputs)

    sset = load_originals(source, transcripts)
    fit_set = load_originals(fit, None) if fit else None
    vocoder = resynthesize
    if resolved != "cpu":
        slots = ensure_gpu_limit(gpu_slots)
        log.info("resynthesis on a GPU: at most %d GPU task(s) at once (tag %s)", slots, GPU_TAG)
        vocoder = resynthesize.with_options(tags={GPU_TAG})
    outputs, done = [], []
    for k, (cb, voc) in enumerate(pairs):
        pair_out, label = str(lib.pair_dir(out_dir, k)), f"pair{k}"
        info = check_output(quote(sset), str(cb), str(voc), pair_out, opts, label,
                            quote(fit_set))
        if info is not None:
            log.info("%s: %s already holds this pair's outputs", label, pair_out)
            done.append({"out": pair_out, "status": "reused", **info})
        else:
            info = vocoder(quote(sset), str(cb), str(voc), pair_out, opts, label,
                           quote(fit_set))
            done.append({"out": pair_out, "status": "resynthesized", **info})
        outputs.append(pair_out)

    combine_outputs(outputs, scoring["source"], name)
    # The subflow keeps the store's keys, the GPU limit, chunking and the report of every
    # evaluation; it runs on its own task runner (Dask when SPEECHQE_DASK_* is set).
    scored = evaluate_speech_set(**scoring)
    rows = compare(scoring["store"], scored["run_id"], outputs,
                   str(out_dir / lib.COMPARISON_NAME))
    publish_artifacts(artifact_key(f"resynth-{name}"), rows, scored["run_id"])
    return {"run_id": scored["run_id"], "store": scoring["store"], "pairs": done,
            "comparison": rows, "n_scored_items": scored["n_scored_items"],
            "n_reused_items": scored.get("n_reused_items", 0), "report": scored.get("report")}
