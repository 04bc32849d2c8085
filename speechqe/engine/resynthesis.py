"""Resynthesis evaluation (engine, L2): score the outputs that
:func:`speechqe.vocoders.resynth.resynthesize` wrote against their originals with the metric
suites, in one store run, and put quality beside bitrate, one row per tokenizer/vocoder pair
(:func:`comparison_table`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechqe import plugins, suites
from speechqe.errors import ConfigError
from speechqe.store import Store
from speechqe.vocoders.resynth import load_outputs

from . import runner
from .aggregate import aggregate

#: Metrics used by default, in this order, when they are registered: WER/CER (ASR), MCD and F0
#: (WORLD analysis against the original), speaker similarity, DNSMOS, DistillMOS. Names not in
#: the registry are left out with a note; MOS predictors are added with ``--metrics``.
DEFAULT_METRICS = ("wer", "cer", "mcd", "f0", "speaker_sim", "dnsmos", "distillmos")


def default_metrics() -> tuple[list[str], list[str]]:
    """(registered default metrics, missing ones)."""
    known = plugins.available()
    return ([m for m in DEFAULT_METRICS if m in known],
            [m for m in DEFAULT_METRICS if m not in known])



def score_outputs(outputs: Sequence[str | Path], metrics: Sequence[str], db: str | Path, *,
                  device: str = "cpu", workers: int = 1, name: str = "resynthesis",
                  params: Mapping[str, dict] | None = None) -> dict[str, Any]:
    """Score resynthesis outputs (:func:`speechqe.vocoders.resynth.resynthesize` folders)
    against their originals, in one store run (:func:`speechqe.engine.runner.score`).

    Returns ``{"run_id", "aggregates": [Aggregate.as_dict()...], "bitrates": {system: ...},
    "skipped": [(metric, reason)]}``.
    """
    allset, bitrates = load_outputs(outputs, name)
    entries = suites.entries_from_list(list(metrics))
    plan = runner.plan_metrics(entries, allset, explicit=True, overrides=dict(params or {}))
    with Store(db) as store:
        res = runner.score(allset, plan.requests, store, device=device, workers=workers,
                           run_name=name, params={"outputs": [str(o) for o in outputs]})
        result = run_result(store, res.run_id, outputs)
    return {**result, "skipped": list(plan.skipped)}


def run_result(store: Any, run_id: str, outputs: Sequence[str | Path]) -> dict[str, Any]:
    """The aggregates of a stored run that scored ``outputs`` (by :func:`evaluate` or any
    evaluation of their :func:`combine_outputs` manifest) beside their bitrates:
    ``{"run_id", "aggregates", "bitrates"}``, the input of :func:`comparison_table`.

    Args:
        store: a :class:`~speechqe.store.Store` or the path of one (opened read-only).
    """
    if isinstance(store, (str, Path)):
        with Store(store, read_only=True) as st:
            records = st.results(run_id)
    else:
        records = store.results(run_id)
    _, bitrates = load_outputs(outputs)
    return {"run_id": run_id, "aggregates": [a.as_dict() for a in aggregate(records)],
            "bitrates": bitrates}


def comparison_table(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per system: bitrates beside the mean of every metric (``n_errors`` kept)."""
    rows: dict[str, dict[str, Any]] = {}
    for system, br in result["bitrates"].items():
        # continuous-feature systems (kNN-VC) send no units: no bitrate (None, never 0)
        rows[system] = {"system": system,
                        **{k: (br or {}).get(k) for k in ("nominal_bps", "empirical_bps",
                                                          "dedup_bps")}}
    for a in result["aggregates"]:
        if a["system"] == "ALL" or a["system"] not in rows:
            continue
        rows[a["system"]][a["metric"]] = a["mean"]
        if a["n_errors"]:
            rows[a["system"]][f"{a['metric']}_errors"] = a["n_errors"]
    return list(rows.values())


def comparison_markdown(rows: Sequence[Mapping[str, Any]], title: str = "Resynthesis") -> str:
    """:func:`comparison_table` rows as a markdown table (bitrates first, then each metric's
    mean; error counts in their own columns)."""
    cols = list(dict.fromkeys(c for r in rows for c in r))

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "NaN" if math.isnan(v) else f"{v:.3f}"
        return "–" if v is None else str(v).replace("|", "\\|").replace("_", "\\_")

    head = [c.replace("_", "\\_") for c in cols]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |",
             "| " + " | ".join("---" if c == "system" else "---:" for c in cols) + " |"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"



def choose_metrics(metrics: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(metrics to score, defaults left out because they are not registered)``: the given
    metrics, else the registered :data:`DEFAULT_METRICS`.

    Raises:
        ConfigError: no metric given and none of the defaults is registered.
    """
    if metrics:
        return [m for m in metrics if m and m.strip()], []
    names, missing = default_metrics()
    if not names:
        raise ConfigError("no resynthesis metric is registered; pass --metrics")
    return names, missing


def conversion_similarity(outputs: Any, target: Any, *,
                          source_refs: Mapping[str, Any] | None = None,
                          speaker_encoder: Any = None) -> dict[str, Any]:
    """Speaker similarity of voice-converted outputs to the target vs to the source.

    Args:
        outputs: the converted items (a :class:`~speechqe.manifest.SpeechSet` written by
            resynthesis; each item's reference is its source original).
        target: the target speaker's reference utterances (a speech set): their mean
            embedding (re-normalised) is the target.
        source_refs: per output item id, a speech set of the source speaker's reference
            utterances (their mean embedding); default: the item's own original.
        speaker_encoder: a :class:`speechqe.speaker.EncoderConfig` (default Resemblyzer).

    Returns:
        ``{"items": [{"id", "sim_target", "sim_source"}], "mean_sim_target",
        "mean_sim_source", "target_closer": fraction of items more similar to the target,
        "n", "n_errors", "errors": {id: reason}, "encoder": model id}``. Items that cannot be
        read are listed in ``errors`` and left out of the means, never counted as 0.
    """
    import numpy as np

    from speechqe.audio import LoadedAudio
    from speechqe.errors import ItemError
    from speechqe.speaker import EncoderConfig, load_encoder

    enc = load_encoder(speaker_encoder or EncoderConfig())

    def emb(item: Any) -> Any:
        """An item (a cut: its segment only) or a file path (a reference)."""
        audio = LoadedAudio.from_file(item) if isinstance(item, str) else item.load()
        return enc.embed(audio.at(enc.sample_rate))

    def centroid(sset: Any) -> Any:
        e = np.stack([emb(it) for it in sset if it.ok])
        m = e.mean(0)
        return m / np.linalg.norm(m)

    tgt = centroid(target)
    src_cache: dict[int, Any] = {}
    items, errors = [], {}
    for it in outputs:
        try:
            if not it.ok:
                raise ItemError(it.error or "not written")
            e = emb(it)
            if source_refs is not None:
                refs = source_refs[it.id]
                if id(refs) not in src_cache:
                    src_cache[id(refs)] = centroid(refs)
                s = src_cache[id(refs)]
            else:
                s = emb(it.ref_path)
        except ItemError as exc:
            errors[it.id] = str(exc)
            continue
        items.append({"id": it.id, "sim_target": float(e @ tgt), "sim_source": float(e @ s)})
    st = [i["sim_target"] for i in items]
    ss = [i["sim_source"] for i in items]
    return {"items": items, "n": len(items), "n_errors": len(errors), "errors": errors,
            "mean_sim_target": float(np.mean(st)) if st else math.nan,
            "mean_sim_source": float(np.mean(ss)) if ss else math.nan,
            "target_closer": (float(np.mean([a > b for a, b in zip(st, ss)])) if st
                              else math.nan),
            "encoder": enc.model_id}
