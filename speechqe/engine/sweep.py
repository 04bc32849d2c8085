"""The tokenizer sweep (engine, L2): encoders x layers x K, each fitted on one speech set,
resynthesised on held-out items with a training-free vocoder, and scored in one store run;
one rate-quality table (``speechqe units sweep``).

Per setting (encoder, layer, K):

1. a k-means codebook on the fit set's features of that layer
   (:func:`speechqe.vocoders.tokenize.train_codebook`; features come from the shared feature
   cache after the first use, so every K of a layer encodes the set once);
2. a WORLD unit vocoder fitted on the same fit set (:mod:`speechqe.vocoders.world`; the WORLD
   analysis of the fit set is done once for the whole sweep);
3. the held-out items encoded, vocoded and written (:func:`speechqe.vocoders.resynth.resynthesize`).

Then every setting's outputs (and the originals, as the ceiling row) are scored together
(:func:`speechqe.engine.resynthesis.score_outputs`), and each row gets the setting's bitrates
(nominal ``rate x log2 K``, empirical unigram entropy, deduplicated) beside the means.

A rerun reuses every setting whose folder already holds the same codebook and outputs, and the
store's records: only what changed is computed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field, field_validator

from speechqe.config import StrictModel
from speechqe.errors import ConfigError
from speechqe.manifest import SpeechSet

#: The sweep table's metrics: WER/CER (ASR), MCD and F0 against the original, speaker
#: similarity to the original, DNSMOS.
SWEEP_METRICS = ("wer", "cer", "mcd", "f0", "speaker_sim", "dnsmos")

#: Columns of the table, in order (means; ``f0_rmse_cents`` from the ``f0`` metric,
#: ``dnsmos_ovrl`` from ``dnsmos``).
TABLE_COLUMNS = ("encoder", "layer", "k", "nominal_bps", "empirical_bps", "dedup_bps", "wer",
                 "cer", "mcd", "f0_rmse_cents", "speaker_sim", "dnsmos_ovrl")


class SweepConfig(StrictModel):
    """What to sweep.

    Attributes:
        encoders: encoder specs (``whisper-tiny.en``, ``whisper-ct2``, ``logmel``,
            ``ssl:<checkpoint>``, a fitted layer interface ``aggregate:<file>``, ...).
        layers: hidden states to try on encoders that have several; an encoder with one
            output (``whisper-ct2``, ``logmel``) is tried once. ``None``: each encoder's last.
        ks: codebook sizes.
        vocoder: the training-free vocoder (``world``).
        f0: the vocoder's F0 (``source`` or ``units``).
        epochs, batch_size, seed: k-means settings (:class:`~speechqe.vocoders.units.KMeansConfig`).
        metrics: scored on the held-out outputs.
        originals: score the originals too (the ceiling row).
        device: encoders and k-means.
    """

    encoders: list[str] = Field(min_length=1)
    layers: list[int] | None = None
    ks: list[int] = Field(min_length=1)
    vocoder: Literal["world"] = "world"
    f0: Literal["source", "units"] = "source"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(2000, ge=1)
    seed: int = 0
    metrics: list[str] = list(SWEEP_METRICS)
    originals: bool = True
    device: str = "cpu"

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if any(k < 2 for k in v):
            raise ValueError("every K must be at least 2")
        return v


def setting_tag(encoder_id: str, layer: int, k: int) -> str:
    enc = re.sub(r"[^A-Za-z0-9.+-]+", "-", "-".join(encoder_id.split(":")[:2]))
    return f"{enc}-L{layer}-k{k}"


def _layers_of(encoder: Any, layers: Sequence[int] | None) -> list[int]:
    if encoder.num_layers == 0 or layers is None:
        return encoder.resolve_layers([-1])
    return sorted(set(encoder.resolve_layers(list(layers))))


def _reusable_codebook(path: Path, fit: SpeechSet, encoder_id: str, layer: int,
                       cfg: SweepConfig, k: int) -> Any:
    from speechqe.vocoders.units import Codebook

    if not path.is_file():
        return None
    try:
        cb = Codebook.load(path)
    except ConfigError:
        return None
    info = cb.info
    same = (cb.k == k and cb.encoder == encoder_id and cb.layer == layer
            and info.get("speech_set_hash") == fit.content_hash()[:16]
            and info.get("epochs") == cfg.epochs and info.get("batch_size") == cfg.batch_size
            and info.get("seed") == cfg.seed)
    return cb if same else None


def run_sweep(heldout: SpeechSet, fit: SpeechSet, cfg: SweepConfig, out: str | Path,
              db: str | Path | None = None, *, log: Any = print) -> dict[str, Any]:
    """Run the sweep; write ``out/<setting>/`` (codebook, WORLD vocoder, outputs),
    ``out/sweep.json``, ``out/sweep.csv`` and ``out/sweep.md``.

    Returns:
        ``{"run_id", "rows": [...], "settings": n, "skipped": [(metric, reason)]}``; each row
        has :data:`TABLE_COLUMNS` (``None`` where not applicable, e.g. the originals' bitrate)
        plus every other metric output's mean and error counts.

    Raises:
        ConfigError: bad settings, an encoder that cannot be loaded, a layer out of range, a
            fit set too small for a K.
    """
    from speechqe.encoders import FeatureCache
    from speechqe.vocoders.features import FeatureSource, load_any_encoder
    from speechqe.vocoders.resynth import (
        ResynthOptions,
        finished_output,
        resynthesize,
        vocoder_request_id,
        write_originals_output,
    )
    from speechqe.vocoders.tokenize import train_codebook
    from speechqe.vocoders.units import KMeansConfig
    from speechqe.vocoders.world import WorldAnalysisConfig, WorldAnalyzer, fit_world_vocoder

    from .resynthesis import choose_metrics, comparison_table, score_outputs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache()
    analyzer = WorldAnalyzer(WorldAnalysisConfig(), cache)
    opts = ResynthOptions(f0=cfg.f0, device=cfg.device)
    outputs: list[Path] = []
    setting_of: dict[str, dict[str, Any]] = {}
    for spec in cfg.encoders:
        encoder = load_any_encoder(spec, device=cfg.device)
        for layer in _layers_of(encoder, cfg.layers):
            src = FeatureSource(encoder, layer, cache, spec=spec)
            for k in cfg.ks:
                tag = setting_tag(encoder.encoder_id, layer, k)
                folder = out / tag
                cb_path = folder / "codebook.npz"
                cb = _reusable_codebook(cb_path, fit, encoder.encoder_id, layer, cfg, k)
                if cb is None:
                    kcfg = KMeansConfig(k=k, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                        seed=cfg.seed, device=cfg.device)
                    cb = train_codebook(fit, src, kcfg)  # info: epochs, batch_size, seed
                    cb.save(cb_path)
                o = dataclasses.replace(opts, system=tag)
                if finished_output(folder, heldout, cb_path, "world", o, fit) is not None:
                    log(f"{tag}: reused")
                else:
                    voc = fit_world_vocoder(fit, src, cb, analyzer=analyzer, device=cfg.device)
                    voc.request_id = vocoder_request_id("world", cb, fit, o)
                    voc.analyzer = analyzer
                    voc.save(folder / "world.safetensors")
                    res = resynthesize(heldout, src, cb, voc, folder, o)
                    log(f"{tag}: {len(res.speech_set) - len(res.errors)} written, "
                        f"{len(res.errors)} errors")
                outputs.append(folder)
                setting_of[tag] = {"encoder": spec, "layer": layer, "k": k}
    if cfg.originals:
        outputs.append(write_originals_output(outputs[0], out / "originals"))
        setting_of["original"] = {"encoder": "original", "layer": None, "k": None}
    names, missing = choose_metrics(cfg.metrics)
    if missing:
        log(f"not registered, left out: {', '.join(missing)}")
    result = score_outputs(outputs, names, db or out / "sweep.duckdb", device=cfg.device,
                           name="units-sweep")
    rows = []
    for r in comparison_table(result):
        row = {**setting_of.get(r["system"], {}), **r}
        rows.append({**{c: row.get(c) for c in TABLE_COLUMNS}, **row})
    summary = {"run_id": result["run_id"], "rows": rows, "settings": len(outputs) - cfg.originals,
               "skipped": result.get("skipped", []), "config": cfg.model_dump(),
               "heldout": heldout.name, "fit": fit.name}
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str))
    write_csv(rows, out / "sweep.csv")
    (out / "sweep.md").write_text(table_markdown(rows))
    return summary


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in cols})


def _cell(v: Any, col: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:.0f}" if col.endswith("_bps") or col == "f0_rmse_cents" else f"{v:.3f}"
    return str(v).replace("|", "\\|")


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The :data:`TABLE_COLUMNS` of ``rows`` as a markdown table."""
    head = "| " + " | ".join(TABLE_COLUMNS) + " |"
    sep = "| " + " | ".join("---" if c == "encoder" else "---:" for c in TABLE_COLUMNS) + " |"
    body = ["| " + " | ".join(_cell(r.get(c), c) for c in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"
