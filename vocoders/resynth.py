"""Resynthesis evaluation: speech set -> units -> waveform -> scores against the originals.

:func:`resynthesize` encodes every item with a codebook, vocodes the units and writes the
waveforms, a manifest (each output item's reference is its original, its transcript the
original's), the unit sequences and the bitrate report. Scoring such outputs against their
originals is the engine's (:mod:`speechqe.engine.resynthesis`): this module only writes and
reads them.

Output ids are ``<system>/<original id>``, so several pairs fit in one speech set and one store
run. An item that cannot be resynthesised stays in the manifest with its error (the runner then
records that error for every metric): it never disappears from the table's counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from speechqe.errors import ConfigError, ItemError
from speechqe.manifest import AudioItem, SpeechSet, describe_file, from_jsonl

from .features import FeatureSource
from .tokenize import encode_set
from .units import (
    BitrateReport,
    Codebook,
    UnitRecord,
    bitrate_report,
    deduplicate,
    write_units,
)

#: File names under a resynthesis output folder (``speechqe resynth -o OUT`` and the
#: ``resynthesis-eval`` flow): the results store when none is given, the manifest of every
#: pair's outputs, the comparison table.
STORE_NAME = "resynth.duckdb"
MANIFEST_NAME = "resynthesis.jsonl"
COMPARISON_NAME = "comparison.json"


@dataclass(frozen=True)
class ResynthOptions:
    """How to resynthesise.

    Attributes:
        dedup: tokenize to deduplicated units.
        durations: with ``dedup``: ``'keep'`` the true run lengths, or ``'predict'`` them with
            the vocoder's duration predictor (the setting of unit-to-speech translation).
        batch_size: sequences per vocoder forward pass.
        device: ``cpu`` or ``cuda``.
        system: the system name of the outputs (default: built from the pair).
        speaker: speaker id or name for multi-speaker vocoders (default: the item's speaker).
        f0: the training-free vocoders' F0 (``world``; ``knn`` always shifts the source's):
            ``'source'`` (the original's, WORLD analysis), ``'units'`` (predicted from the
            units) or a folder of given contours ``<id>.npy|.txt|.csv|.f0``
            (:func:`~speechqe.vocoders.world.read_f0_contour`).
        knn_k, knn_inputs: the ``knn`` vocoder's neighbours and inputs
            (:class:`~speechqe.vocoders.knn.KnnConfig`).
    """

    dedup: bool = False
    durations: str = "keep"
    batch_size: int = 8
    device: str = "cpu"
    system: str | None = None
    speaker: str | None = None
    f0: str = "source"
    knn_k: int = 4
    knn_inputs: str = "continuous"

    def __post_init__(self) -> None:
        if self.durations not in ("keep", "predict"):
            raise ConfigError("durations must be 'keep' or 'predict'")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size})")
        if self.f0 not in ("source", "units") and not Path(self.f0).is_dir():
            raise ConfigError(f"f0 must be 'source', 'units' or a folder of F0 contours "
                              f"(got {self.f0!r})")
        self.knn_config()  # validates knn_k and knn_inputs

    def knn_config(self) -> Any:
        from speechqe.config import validate

        from .knn import KnnConfig

        return validate(KnnConfig, {"k": self.knn_k, "inputs": self.knn_inputs}, "knn")

    def identity(self) -> dict[str, Any]:
        """The options that change the waveforms (not batch size, which never does, nor the
        device)."""
        return {"dedup": self.dedup, "durations": self.durations, "speaker": self.speaker,
                "f0": self.f0, "knn_k": self.knn_k, "knn_inputs": self.knn_inputs}


@dataclass
class ResynthResult:
    speech_set: SpeechSet
    system: str
    bitrate: BitrateReport | None
    errors: dict[str, str] = field(default_factory=dict)
    out_dir: Path = Path()


def system_name(codebook: Codebook, vocoder: Any, opts: ResynthOptions) -> str:
    enc = re.sub(r"[^A-Za-z0-9.+-]+", "-", "-".join(codebook.encoder.split(":")[:2]))
    tag = f"{enc}-L{codebook.layer}-k{codebook.k}"
    if opts.dedup:
        tag += "-dedup" + ("-pred" if opts.durations == "predict" else "")
    kind = vocoder_kind(vocoder)
    if kind == "world":
        return tag + "-world" + ("" if opts.f0 == "source" else
                                 "-f0units" if opts.f0 == "units" else "-f0given")
    if kind == "knn":
        return tag + f"-knn{opts.knn_k}" + ("-units" if opts.knn_inputs == "units" else "")
    step = vocoder.meta.get("step")
    return tag + (f"-hifigan{step}" if step is not None else "-hifigan")


def vocoder_kind(vocoder: Any) -> str:
    """``'hifigan'`` (a :class:`~.unit_hifigan.infer.UnitVocoder`), ``'world'`` or ``'knn'``."""
    return getattr(vocoder, "kind", "hifigan")


def _check_pair(codebook: Codebook, vocoder: Any) -> None:
    kind = vocoder_kind(vocoder)
    if kind == "hifigan":
        _check_compatible(codebook, vocoder.model.cfg, vocoder.meta)
    elif kind == "world":
        _check_world(codebook, vocoder)
    else:
        meta = vocoder.matching.meta
        if meta.get("encoder") != codebook.encoder or meta.get("layer") != codebook.layer:
            raise ConfigError(f"the kNN matching set was encoded by {meta.get('encoder')} layer "
                              f"{meta.get('layer')}, not the codebook's {codebook.encoder} "
                              f"layer {codebook.layer}")


def _check_world(codebook: Codebook, voc: Any) -> None:
    """Refuse a WORLD unit vocoder fitted on another codebook."""
    if voc.k != codebook.k:
        raise ConfigError(f"the WORLD vocoder has statistics for {voc.k} units, the codebook "
                          f"{codebook.k}")
    if not math.isclose(voc.unit_rate, codebook.frame_rate, rel_tol=1e-6):
        raise ConfigError(f"the WORLD vocoder was fitted at {voc.unit_rate:g} frames/s, the "
                          f"codebook's encoder runs at {codebook.frame_rate:g}")
    fp = voc.meta.get("codebook")
    if fp and fp != codebook.fingerprint():
        raise ConfigError(f"the WORLD vocoder was fitted on codebook {fp}, not "
                          f"{codebook.fingerprint()}")


def _check_compatible(codebook: Codebook, cfg: Any, meta: Mapping[str, Any]) -> None:
    """Refuse a vocoder (its :class:`GeneratorConfig` and speechqe metadata) whose units are
    not the codebook's."""
    if cfg.num_embeddings != codebook.k:
        raise ConfigError(f"the vocoder has {cfg.num_embeddings} unit embeddings, the codebook "
                          f"{codebook.k} units")
    if not math.isclose(cfg.frame_rate, codebook.frame_rate, rel_tol=1e-6):
        raise ConfigError(f"the vocoder runs at {cfg.frame_rate:g} frames/s, the codebook's "
                          f"encoder at {codebook.frame_rate:g}")
    units_meta = meta.get("units") or {}
    fp = units_meta.get("codebook")
    if fp and fp != codebook.fingerprint():
        raise ConfigError(f"the vocoder was trained on codebook {fp}, not "
                          f"{codebook.fingerprint()}")


def resynthesize(speech_set: SpeechSet, source: FeatureSource, codebook: Codebook, vocoder: Any,
                 out_dir: str | Path, opts: ResynthOptions = ResynthOptions()) -> ResynthResult:
    """Encode, vocode and write ``speech_set``; see the module docstring.

    Args:
        vocoder: a :class:`~speechqe.vocoders.unit_hifigan.infer.UnitVocoder`, a
            :class:`~.world.WorldUnitVocoder` or a :class:`~.knn.KnnVocoder` (see
            :func:`load_vocoder`).
        out_dir: receives ``<system>/<id>.wav``, ``manifest.jsonl``, ``units.jsonl``,
            ``bitrate.json``.
    """
    if vocoder_kind(vocoder) == "knn" and opts.knn_inputs == "continuous":
        _check_pair(codebook, vocoder)
        opts = dataclasses.replace(opts, system=opts.system or system_name(codebook, vocoder,
                                                                           opts))
        return convert_set(speech_set, source, vocoder, out_dir, opts, codebook)
    enc = encode_set(speech_set, source, codebook, dedup=opts.dedup, device=opts.device)
    return vocode_units(speech_set, enc.records, codebook, vocoder, out_dir, opts, enc.errors)


def vocode_units(speech_set: SpeechSet, records: Sequence[UnitRecord], codebook: Codebook,
                 vocoder: Any, out_dir: str | Path, opts: ResynthOptions = ResynthOptions(),
                 errors: Mapping[str, str] | None = None) -> ResynthResult:
    """The second half of :func:`resynthesize`, from unit sequences already computed (e.g. a
    ``units encode`` file): vocode, write, build the manifest. ``records`` are matched to
    ``speech_set`` items by id; items without a record are kept as errors (``errors`` gives
    their reasons).

    Args:
        vocoder: a unit HiFi-GAN (:class:`~.unit_hifigan.infer.UnitVocoder`), a
            :class:`~.world.WorldUnitVocoder` or a :class:`~.knn.KnnVocoder` (with
            ``knn_inputs='units'`` the units' centroids are matched; ``'continuous'`` needs
            the features, see :func:`convert_set`).
    """
    _check_pair(codebook, vocoder)
    kind = vocoder_kind(vocoder)
    if kind != "hifigan" and opts.dedup and opts.durations == "predict":
        raise ConfigError(f"the {kind} vocoder has no duration predictor: use true durations "
                          "(--dedup) or a unit HiFi-GAN trained with one")
    if kind == "knn" and opts.knn_inputs != "units":
        raise ConfigError("a kNN vocoder on units needs knn_inputs='units' (continuous "
                          "features: convert_set)")
    system = opts.system or system_name(codebook, vocoder, opts)
    out_dir = Path(out_dir)
    errors = dict(errors or {})
    ids = {it.id for it in speech_set}
    records = [r for r in records if r.id in ids]
    if opts.dedup:
        records = [r if r.durations is not None else
                   dataclasses.replace(r, units=deduplicate(r.units)[0],
                                       durations=deduplicate(r.units)[1]) for r in records]
    else:
        records = [dataclasses.replace(r, units=r.frame_units(), durations=None) for r in records]
    write_units(out_dir / "units.jsonl", records, codebook, opts.dedup)
    br = bitrate_report([r.frame_units() for r in records], codebook.frame_rate, codebook.k)

    by_id = {it.id: it for it in speech_set}
    if kind == "hifigan":
        wavs = _synth_hifigan(records, vocoder, opts, errors, by_id)
    elif kind == "world":
        wavs = _synth_world(records, vocoder, opts, errors, by_id)
    else:
        wavs = _synth_knn(records, vocoder, opts, errors, by_id,
                          lambda r: codebook.centroids[r.frame_units()])
    frame_aligned = not (opts.dedup and opts.durations == "predict")
    info = {"system": system, "codebook": codebook.header(), "vocoder": _vocoder_step(vocoder),
            "vocoder_kind": kind, "vocoder_id": vocoder_id_of(vocoder),
            "source_hash": speech_set.content_hash(), **opts.identity(), "errors": errors,
            "bitrate": br.to_dict()}
    return _write_outputs(speech_set, system, out_dir, wavs, vocoder.sample_rate, frame_aligned,
                          errors, info, br)


def convert_set(speech_set: SpeechSet, source: FeatureSource, vocoder: Any, out_dir: str | Path,
                opts: ResynthOptions = ResynthOptions(), codebook: Codebook | None = None
                ) -> ResynthResult:
    """kNN voice conversion of every item from its continuous features
    (:class:`~.knn.KnnVocoder`, ``inputs='continuous'``), written as :func:`resynthesize`
    writes (no units, so no bitrate: ``bitrate.json`` holds ``null``). ``codebook``, when
    given, is only recorded (it named the encoder layer)."""
    meta = vocoder.matching.meta
    if meta.get("encoder") != source.encoder_id or meta.get("layer") != source.resolved_layer:
        raise ConfigError(f"the matching set was encoded by {meta.get('encoder')} layer "
                          f"{meta.get('layer')}, the source by {source.encoder_id} layer "
                          f"{source.resolved_layer}")
    if meta.get("codebook"):
        raise ConfigError("this matching set is quantised (inputs='units'): use vocode_units")
    enc = re.sub(r"[^A-Za-z0-9.+-]+", "-", "-".join(source.encoder_id.split(":")[:2]))
    system = opts.system or f"{enc}-L{source.resolved_layer}-knn{vocoder.cfg.k}"
    items = list(speech_set)
    errors: dict[str, str] = {}
    feats = {}
    for s in range(0, len(items), 8):
        for it, f in zip(items[s:s + 8], source.features(items[s:s + 8])):
            if isinstance(f, ItemError):
                errors[it.id] = f"{f.code}: {f}"
            else:
                feats[it.id] = f
    records = [UnitRecord(id=it.id, path=it.path, sha256=it.sha256,
                          units=np.zeros(0, np.int64), durations=None,
                          frames=int(feats[it.id].shape[0]), text=it.text, speaker=it.speaker)
               for it in items if it.id in feats]
    by_id = {it.id: it for it in items}
    wavs = _synth_knn(records, vocoder, opts, errors, by_id, lambda r: feats[r.id])
    info = {"system": system, "codebook": codebook.header() if codebook else None,
            "vocoder": None, "vocoder_kind": "knn",
            "vocoder_id": vocoder_id_of(vocoder), "encoder": source.encoder_id,
            "layer": source.resolved_layer, "matching_set": meta,
            "source_hash": speech_set.content_hash(), **opts.identity(), "errors": errors,
            "bitrate": None}
    return _write_outputs(speech_set, system, Path(out_dir), wavs, vocoder.sample_rate, True,
                          errors, info, None)


def _vocoder_step(vocoder: Any) -> Any:
    return vocoder.meta.get("step") if vocoder_kind(vocoder) == "hifigan" else None


def vocoder_id_of(vocoder: Any) -> str:
    """The id recorded for a loaded vocoder: the request it was fitted for (a ``world``/``knn``
    fit inside the command, :func:`vocoder_request_id`), else its checkpoint id."""
    return getattr(vocoder, "request_id", "") or getattr(vocoder, "checkpoint_id", "")


def _synth_hifigan(records: Sequence[UnitRecord], vocoder: Any, opts: ResynthOptions,
                   errors: dict[str, str], by_id: Mapping[str, AudioItem]
                   ) -> dict[str, np.ndarray]:

    from .f0 import F0Quantizer, extract_f0

    cfg = vocoder.model.cfg
    quant = None
    if cfg.f0 and cfg.f0_quant_num_bin:
        if "f0_quantizer" not in vocoder.meta:
            raise ConfigError("this vocoder uses quantised F0 but carries no F0 quantiser")
        quant = F0Quantizer.from_dict(vocoder.meta["f0_quantizer"])
    speakers_table = list(vocoder.meta.get("speakers") or [])

    keep: list[str] = []
    units, durs, f0s, spks = [], [], [], []
    for r in records:
        try:
            spk = None
            if cfg.multispkr:
                if cfg.speaker_embedding_dim:
                    raise ConfigError("speaker-vector vocoders need speaker vectors; resynth "
                                      "supports speaker-id vocoders")
                name = opts.speaker or r.speaker
                if name is None or (name not in speakers_table and not str(name).isdigit()):
                    raise ConfigError(f"speaker {name!r} is not one of the vocoder's speakers")
                spk = speakers_table.index(name) if name in speakers_table else int(name)
            n_frames = r.frames
            if opts.dedup and opts.durations == "predict":
                n_frames = None  # known after prediction; F0 then cannot be aligned
                if cfg.f0:
                    raise ConfigError("F0-conditioned vocoders need frame-aligned F0: use "
                                      "durations='keep'")
            f0 = None
            if cfg.f0:
                x = by_id[r.id].load().at(cfg.sampling_rate)  # a cut: its segment only
                hz = extract_f0(x, cfg.sampling_rate, cfg.frame_rate, n_frames)
                f0 = quant.quantize(hz, r.speaker) if quant is not None else hz
        except ItemError as exc:  # the original cannot be read again for its F0
            errors[r.id] = f"{exc.code}: {exc}"
            continue
        keep.append(r.id)
        units.append(r.units)
        durs.append(r.durations)
        f0s.append(f0)
        spks.append(spk)

    wavs = vocoder.synthesize(
        units,
        durations=durs if (opts.dedup and opts.durations == "keep") else None,
        predict_durations=(opts.dedup and opts.durations == "predict"),
        f0=f0s if cfg.f0 else None,
        speakers=spks if cfg.multispkr else None,
        batch_size=opts.batch_size,
    ) if units else []
    return dict(zip(keep, wavs))


def _analyzer(vocoder: Any, cfg: Any) -> Any:
    from speechqe.encoders import FeatureCache

    from .world import WorldAnalyzer

    an = getattr(vocoder, "analyzer", None)
    return an if an is not None and an.cfg == cfg else WorldAnalyzer(cfg, FeatureCache())


def _synth_world(records: Sequence[UnitRecord], vocoder: Any, opts: ResynthOptions,
                 errors: dict[str, str], by_id: Mapping[str, AudioItem]
                 ) -> dict[str, np.ndarray]:
    """WORLD unit vocoder, F0 from the source, the units or a given contour."""
    from .world import read_f0_contour, resample_contour

    analyzer = _analyzer(vocoder, vocoder.cfg)
    out: dict[str, np.ndarray] = {}
    for r in records:
        u = r.frame_units()
        try:
            if opts.f0 == "source":
                f0: Any = analyzer.features(by_id[r.id]).f0
            elif opts.f0 == "units":
                f0 = "units"
            else:
                f0 = _given_contour(Path(opts.f0), r.id, vocoder, u.size, read_f0_contour,
                                    resample_contour)
            out[r.id] = vocoder.synthesize(u, f0)
        except ItemError as exc:
            errors[r.id] = f"{exc.code}: {exc}"
    return out


def _given_contour(folder: Path, item_id: str, vocoder: Any, n_units: int, read, resample
                   ) -> np.ndarray:
    for ext in (".npy", ".txt", ".csv", ".f0"):
        p = folder / f"{item_id}{ext}"
        if p.is_file():
            t, hz = read(p, vocoder.unit_rate)
            return resample(t, hz, vocoder.n_world_frames(n_units), vocoder.cfg.frame_period_ms)
    from speechqe.errors import item_error

    raise item_error("missing_reference", f"no F0 contour {item_id}.npy|.txt|.csv|.f0 in {folder}")


def _synth_knn(records: Sequence[UnitRecord], vocoder: Any, opts: ResynthOptions,
               errors: dict[str, str], by_id: Mapping[str, AudioItem], features: Any
               ) -> dict[str, np.ndarray]:
    """kNN-VC of each record's source frames (``features(record)``), the source's F0 moved to
    the target's range."""
    analyzer = _analyzer(vocoder, vocoder.cfg.analysis)
    out: dict[str, np.ndarray] = {}
    for r in records:
        try:
            out[r.id] = vocoder.convert(features(r), analyzer.features(by_id[r.id]).f0)
        except ItemError as exc:
            errors[r.id] = f"{exc.code}: {exc}"
    return out


def _write_outputs(speech_set: SpeechSet, system: str, out_dir: Path,
                   wavs: Mapping[str, np.ndarray], sample_rate: int, frame_aligned: bool,
                   errors: Mapping[str, str], info: dict[str, Any],
                   br: BitrateReport | None) -> ResynthResult:
    """Write ``<system>/<id>.wav``, ``manifest.jsonl`` (failed items kept with their error)
    and ``bitrate.json``."""
    import soundfile as sf

    wav_dir = out_dir / system
    by_id = {it.id: it for it in speech_set}
    written: dict[str, Path] = {}
    for item_id, w in wavs.items():
        orig = by_id[item_id]
        if frame_aligned and orig.frames and orig.sample_rate:
            # Encoders count frames differently at the edges (centred STFT: one more; Whisper:
            # one fewer): give the output the original's duration, so intrusive metrics compare
            # equal spans.
            n = round(orig.frames * sample_rate / orig.sample_rate)
            w = w[:n] if w.size >= n else np.pad(w, (0, n - w.size))
        path = wav_dir / f"{item_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.clip(w, -1.0, 1.0), sample_rate, subtype="PCM_16")
        written[item_id] = path
    items = []
    for it in speech_set:
        common = dict(ref_path=it.path, ref_sha256=it.sha256, text=it.text, speaker=it.speaker,
                      extra=(("source_id", it.id),))
        new_id = f"{system}/{it.id}"
        if it.id in written:
            items.append(describe_file(written[it.id], item_id=new_id, system=system, **common))
        else:
            reason = errors.get(it.id) or (it.error or "not resynthesised")
            code = reason.split(":", 1)[0] if ":" in reason else "unexpected"
            items.append(AudioItem(id=new_id, path=str(wav_dir / f"{it.id}.wav"), system=system,
                                   error_type=code if re.fullmatch(r"[a-z_]+", code) else
                                   "unexpected", error=reason, **common))
    if len(items) != len(by_id):
        raise AssertionError("every original must give one output item")
    out_set = SpeechSet(tuple(items), name=f"resynth-{system}", source=str(out_dir))
    out_set.to_jsonl(out_dir / "manifest.jsonl")
    info = {**info, "errors": dict(errors)}
    (out_dir / "bitrate.json").write_text(json.dumps(info, indent=2, default=str))
    return ResynthResult(out_set, system, br, dict(errors), out_dir)


def load_result(out_dir: str | Path) -> tuple[SpeechSet, dict[str, Any]]:
    """Read back a :func:`resynthesize` output folder: its speech set and bitrate info."""
    out_dir = Path(out_dir)
    info_path = out_dir / "bitrate.json"
    if not info_path.is_file():
        raise ConfigError(f"{out_dir} is not a resynthesis output (no bitrate.json)")
    return from_jsonl(out_dir / "manifest.jsonl"), json.loads(info_path.read_text())


def load_outputs(outputs: Sequence[str | Path], name: str = "resynthesis"
                 ) -> tuple[SpeechSet, dict[str, Any]]:
    """Several :func:`resynthesize` outputs as one speech set (ids ``<system>/<id>``, each
    item's reference its original) and their bitrate reports by system."""
    sets, bitrates = [], {}
    for o in outputs:
        s, info = load_result(o)
        sets.append(s)
        bitrates[info["system"]] = info["bitrate"]
    allset = SpeechSet(tuple(it for s in sets for it in s), name=name,
                       source=",".join(str(o) for o in outputs))
    return allset, bitrates


def write_originals_output(output: str | Path, out_dir: str | Path) -> Path:
    """The originals behind a resynthesis output folder as one more output (system
    ``original``, each item its own reference, no bitrate): the ceiling row of a comparison."""
    out_set, _ = load_result(output)
    items = [describe_file(it.ref_path, item_id=f"original/{it.get('source_id')}",
                           system="original", ref_path=it.ref_path, ref_sha256=it.ref_sha256,
                           text=it.text, speaker=it.speaker,
                           extra=(("source_id", it.get("source_id")),))
             for it in out_set if it.ref_path]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    SpeechSet(tuple(items), name="originals", source=str(out_dir)).to_jsonl(
        out_dir / "manifest.jsonl")
    (out_dir / "bitrate.json").write_text(json.dumps({"system": "original", "bitrate": None}))
    return out_dir


def combine_outputs(outputs: Sequence[str | Path], path: str | Path,
                    name: str = "resynthesis") -> Path:
    """Write the :func:`load_outputs` set as one manifest (read back as it is, hashes
    included), so any evaluation, e.g. the ``evaluate-speech-set`` flow, scores every pair in
    one run with the ids :func:`evaluate` uses."""
    allset, _ = load_outputs(outputs, name)
    path = Path(path)
    allset.to_jsonl(path)
    return path


def pair_dir(out: str | Path, k: int) -> Path:
    """Where the ``k``-th codebook/vocoder pair's output goes under ``out``."""
    return Path(out) / f"pair{k}"


#: ``--vocoder`` values that are fitted on a speech set (``--fit``) inside the command.
FITTED_VOCODERS = ("world", "knn")


def vocoder_request_id(vocoder: str | Path, codebook: str | Path | Codebook,
                       fit_set: SpeechSet | None = None,
                       opts: ResynthOptions = ResynthOptions()) -> str:
    """Names the vocoder a resynthesis uses, without fitting or loading it: a unit HiFi-GAN's
    :func:`~.unit_hifigan.checkpoint.checkpoint_id`, a saved WORLD vocoder's statistics hash, or
    for ``world``/``knn`` fitted in the command a hash of what the fit is a function of (the
    fit set's content, the codebook, the settings)."""
    import hashlib

    v = str(vocoder)
    if v in FITTED_VOCODERS:
        from .world import WorldAnalysisConfig

        if fit_set is None:
            raise ConfigError(f"--vocoder {v} is fitted on a speech set: give --fit FIT_SET")
        cb = codebook if isinstance(codebook, Codebook) else Codebook.load(codebook)
        settings = (WorldAnalysisConfig().model_dump() if v == "world"
                    else opts.knn_config().model_dump())
        blob = json.dumps([v, fit_set.content_hash(), cb.fingerprint(), settings],
                          sort_keys=True, default=str)
        return f"{v}-fit-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
    if Path(v).suffix == ".safetensors":
        from .world import WorldUnitVocoder

        return WorldUnitVocoder.load(v).checkpoint_id
    from .unit_hifigan.checkpoint import checkpoint_id

    return checkpoint_id(v)


def check_pairs(codebooks: Sequence[str | Path], vocoders: Sequence[str | Path],
                fit: str | Path | None = None) -> list[tuple[Path, Path]]:
    """The codebook/vocoder pairs, checked to exist and to fit each other (unit count, frame
    rate, the codebook a speechqe vocoder was trained on) from the codebooks and the vocoders'
    configs, without loading a vocoder's weights.

    ``vocoders`` entries: a unit HiFi-GAN checkpoint (file or folder), a WORLD unit vocoder
    (``.safetensors``), or ``world``/``knn`` (fitted on ``fit`` in the command).

    Raises:
        ConfigError: no pair, unequal numbers, a missing or unreadable codebook, checkpoint or
            config, a vocoder that does not fit its codebook, or ``world``/``knn`` without
            ``fit``.
    """
    from .unit_hifigan.checkpoint import checkpoint_id, read_config, resolve_generator_file
    from .unit_hifigan.config import GeneratorConfig

    if not codebooks or not vocoders:
        raise ConfigError("give at least one codebook and vocoder pair")
    if len(codebooks) != len(vocoders):
        raise ConfigError(f"give one codebook per vocoder, pairs in order (got {len(codebooks)} "
                          f"codebooks and {len(vocoders)} vocoders)")
    pairs = [(Path(c), Path(v)) for c, v in zip(codebooks, vocoders)]
    for k, (cb, voc) in enumerate(pairs):
        try:
            codebook = Codebook.load(cb)
            if str(voc) in FITTED_VOCODERS:
                if fit is None:
                    raise ConfigError(f"--vocoder {voc} is fitted on a speech set: give --fit "
                                      "FIT_SET")
                if not codebook.info.get("encoder_spec"):
                    raise ConfigError(f"{cb} does not name its encoder spec")
                continue
            if voc.suffix == ".safetensors":
                from .world import WorldUnitVocoder

                _check_world(codebook, WorldUnitVocoder.load(voc))
                continue
            checkpoint_id(voc)  # the generator file and its config exist
            cfg = read_config(resolve_generator_file(voc)[1])
            _check_compatible(codebook, GeneratorConfig.from_public(cfg),
                              cfg.get("speechqe") or {})
        except ConfigError as exc:
            raise ConfigError(f"pair {k} ({cb.name}, {voc.name}): {exc}") from None
    return pairs


def load_vocoder(vocoder: str | Path, *, codebook: Codebook, source: FeatureSource,
                 fit_set: SpeechSet | None = None, opts: ResynthOptions = ResynthOptions(),
                 device: str = "cpu", save_dir: str | Path | None = None) -> Any:
    """Load (or fit) the vocoder ``vocoder`` names.

    * a unit HiFi-GAN checkpoint file or folder;
    * a ``.safetensors`` WORLD unit vocoder (:meth:`~.world.WorldUnitVocoder.save`);
    * ``world``: fitted on ``fit_set`` with ``codebook`` (saved as
      ``save_dir/world.safetensors`` when given, for reuse with ``--vocoder``);
    * ``knn``: ``fit_set`` is the target speaker's matching set.

    Raises:
        ConfigError: ``world``/``knn`` without ``fit_set``; unreadable files.
    """
    v = str(vocoder)
    if v in FITTED_VOCODERS:
        from speechqe.encoders import FeatureCache

        from .world import WorldAnalysisConfig, WorldAnalyzer, fit_world_vocoder

        request = vocoder_request_id(v, codebook, fit_set, opts)  # refuses fit_set=None
        if v == "world":
            analyzer = WorldAnalyzer(WorldAnalysisConfig(), FeatureCache())
            voc: Any = fit_world_vocoder(fit_set, source, codebook, analyzer=analyzer,
                                         device=device)
            if save_dir is not None:
                voc.save(Path(save_dir) / "world.safetensors")
        else:
            from .knn import KnnVocoder, build_matching_set

            kcfg = opts.knn_config()
            analyzer = WorldAnalyzer(kcfg.analysis, FeatureCache())
            ms = build_matching_set(fit_set, source, analyzer, device=device,
                                    codebook=codebook if kcfg.inputs == "units" else None)
            voc = KnnVocoder(ms, kcfg)
        voc.analyzer = analyzer
        voc.request_id = request
        return voc
    if Path(v).suffix == ".safetensors":
        from .world import WorldUnitVocoder

        return WorldUnitVocoder.load(v)
    from .unit_hifigan.infer import UnitVocoder

    return UnitVocoder.from_checkpoint(v, device=device)


def load_pair(codebook: str | Path, vocoder: str | Path, *, device: str = "cpu",
              fit_set: SpeechSet | None = None, opts: ResynthOptions = ResynthOptions(),
              save_dir: str | Path | None = None) -> tuple[Codebook, FeatureSource, Any]:
    """Load a codebook, the feature source of its encoder layer and a vocoder
    (:func:`load_vocoder`).

    Raises:
        ConfigError: an unreadable codebook or checkpoint, or a codebook that does not name its
            encoder spec.
    """
    from .features import load_feature_source

    cb = Codebook.load(codebook)
    spec = cb.info.get("encoder_spec")
    if not spec:
        raise ConfigError(f"{codebook} does not name its encoder spec")
    src = load_feature_source(spec, cb.layer, device=device)
    voc = load_vocoder(vocoder, codebook=cb, source=src, fit_set=fit_set, opts=opts,
                       device=device, save_dir=save_dir)
    return cb, src, voc


def finished_output(out_dir: str | Path, speech_set: SpeechSet, codebook: str | Path,
                    vocoder: str | Path, opts: ResynthOptions = ResynthOptions(),
                    fit_set: SpeechSet | None = None) -> dict[str, Any] | None:
    """The recorded info (``bitrate.json``) of ``out_dir`` when it holds the complete output
    that :func:`resynthesize` would write again, else ``None``: the same originals (content
    hash), codebook (fingerprint), vocoder (:func:`vocoder_request_id`: a checkpoint, or a fit
    on ``fit_set``), the options that change waveforms, and every written waveform still
    present. Loads no model."""
    out_dir = Path(out_dir)
    try:
        out_set, info = load_result(out_dir)
    except (ConfigError, ValueError, OSError):
        return None
    same = (
        info.get("source_hash") == speech_set.content_hash()
        and (info.get("codebook") or {}).get("fingerprint") == Codebook.load(codebook).fingerprint()
        and info.get("vocoder_id") == vocoder_request_id(vocoder, codebook, fit_set, opts)
        and all(info.get(k) == v for k, v in opts.identity().items())
        and (opts.system is None or info.get("system") == opts.system)
        and len(out_set) == len(speech_set)
        and all(Path(it.path).is_file() for it in out_set if it.ok)
    )
    return info if same else None
