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
    """

    dedup: bool = False
    durations: str = "keep"
    batch_size: int = 8
    device: str = "cpu"
    system: str | None = None
    speaker: str | None = None

    def __post_init__(self) -> None:
        if self.durations not in ("keep", "predict"):
            raise ConfigError("durations must be 'keep' or 'predict'")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size})")

    def identity(self) -> dict[str, Any]:
        """The options that change the waveforms (not batch size, which never does, nor the
        device)."""
        return {"dedup": self.dedup, "durations": self.durations, "speaker": self.speaker}


@dataclass
class ResynthResult:
    speech_set: SpeechSet
    system: str
    bitrate: BitrateReport
    errors: dict[str, str] = field(default_factory=dict)
    out_dir: Path = Path()


def system_name(codebook: Codebook, vocoder: Any, opts: ResynthOptions) -> str:
    enc = re.sub(r"[^A-Za-z0-9.+-]+", "-", "-".join(codebook.encoder.split(":")[:2]))
    tag = f"{enc}-L{codebook.layer}-k{codebook.k}"
    if opts.dedup:
        tag += "-dedup" + ("-pred" if opts.durations == "predict" else "")
    step = vocoder.meta.get("step")
    return tag + (f"-hifigan{step}" if step is not None else "-hifigan")


def _check_pair(codebook: Codebook, vocoder: Any) -> None:
    _check_compatible(codebook, vocoder.model.cfg, vocoder.meta)


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
        vocoder: a :class:`~speechqe.vocoders.unit_hifigan.infer.UnitVocoder`.
        out_dir: receives ``<system>/<id>.wav``, ``manifest.jsonl``, ``units.jsonl``,
            ``bitrate.json``.
    """
    enc = encode_set(speech_set, source, codebook, dedup=opts.dedup, device=opts.device)
    return vocode_units(speech_set, enc.records, codebook, vocoder, out_dir, opts, enc.errors)


def vocode_units(speech_set: SpeechSet, records: Sequence[UnitRecord], codebook: Codebook,
                 vocoder: Any, out_dir: str | Path, opts: ResynthOptions = ResynthOptions(),
                 errors: Mapping[str, str] | None = None) -> ResynthResult:
    """The second half of :func:`resynthesize`, from unit sequences already computed (e.g. a
    ``units encode`` file): vocode, write, build the manifest. ``records`` are matched to
    ``speech_set`` items by id; items without a record are kept as errors (``errors`` gives
    their reasons)."""
    from speechqe.audio import LoadedAudio

    from .f0 import F0Quantizer, extract_f0

    _check_pair(codebook, vocoder)
    cfg = vocoder.model.cfg
    system = opts.system or system_name(codebook, vocoder, opts)
    out_dir = Path(out_dir)
    wav_dir = out_dir / system
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

    quant = None
    if cfg.f0 and cfg.f0_quant_num_bin:
        if "f0_quantizer" not in vocoder.meta:
            raise ConfigError("this vocoder uses quantised F0 but carries no F0 quantiser")
        quant = F0Quantizer.from_dict(vocoder.meta["f0_quantizer"])
    speakers_table = list(vocoder.meta.get("speakers") or [])

    keep: list[int] = []
    units, durs, f0s, spks = [], [], [], []
    for i, r in enumerate(records):
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
                x = LoadedAudio.from_file(r.path).at(cfg.sampling_rate)
                hz = extract_f0(x, cfg.sampling_rate, cfg.frame_rate, n_frames)
                f0 = quant.quantize(hz, r.speaker) if quant is not None else hz
        except ItemError as exc:  # the original cannot be read again for its F0
            errors[r.id] = f"{exc.code}: {exc}"
            continue
        keep.append(i)
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

    import soundfile as sf

    by_id = {it.id: it for it in speech_set}
    written: dict[str, Path] = {}
    frame_aligned = not (opts.dedup and opts.durations == "predict")
    for i, w in zip(keep, wavs):
        r = records[i]
        orig = by_id[r.id]
        if frame_aligned and orig.frames and orig.sample_rate:
            # Encoders count frames differently at the edges (centred STFT: one more; Whisper:
            # one fewer): give the output the original's duration, so intrusive metrics compare
            # equal spans.
            n = round(orig.frames * cfg.sampling_rate / orig.sample_rate)
            w = w[:n] if w.size >= n else np.pad(w, (0, n - w.size))
        path = wav_dir / f"{r.id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.clip(w, -1.0, 1.0), cfg.sampling_rate, subtype="PCM_16")
        written[r.id] = path
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
    assert len(items) == len(by_id)
    out_set = SpeechSet(tuple(items), name=f"resynth-{system}", source=str(out_dir))
    out_set.to_jsonl(out_dir / "manifest.jsonl")
    info = {"system": system, "codebook": codebook.header(), "vocoder": vocoder.meta.get("step"),
            "vocoder_id": getattr(vocoder, "checkpoint_id", ""),
            "source_hash": speech_set.content_hash(), **opts.identity(), "errors": errors,
            "bitrate": br.to_dict()}
    (out_dir / "bitrate.json").write_text(json.dumps(info, indent=2, default=str))
    return ResynthResult(out_set, system, br, errors, out_dir)


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


def check_pairs(codebooks: Sequence[str | Path], vocoders: Sequence[str | Path]
                ) -> list[tuple[Path, Path]]:
    """The codebook/vocoder pairs, checked to exist and to fit each other (unit count, frame
    rate, the codebook a speechqe vocoder was trained on) from the codebooks and the vocoders'
    configs, without loading a vocoder's weights.

    Raises:
        ConfigError: no pair, unequal numbers, a missing or unreadable codebook, checkpoint or
            config, or a vocoder that does not fit its codebook.
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
        checkpoint_id(voc)  # the generator file and its config exist
        cfg = read_config(resolve_generator_file(voc)[1])
        try:
            _check_compatible(Codebook.load(cb), GeneratorConfig.from_public(cfg),
                              cfg.get("speechqe") or {})
        except ConfigError as exc:
            raise ConfigError(f"pair {k} ({cb.name}, {voc.name}): {exc}") from None
    return pairs


def load_pair(codebook: str | Path, vocoder: str | Path, *, device: str = "cpu"
              ) -> tuple[Codebook, FeatureSource, Any]:
    """Load a codebook, the feature source of its encoder layer and a vocoder checkpoint.

    Raises:
        ConfigError: an unreadable codebook or checkpoint, or a codebook that does not name its
            encoder spec.
    """
    from .features import load_feature_source
    from .unit_hifigan.infer import UnitVocoder

    cb = Codebook.load(codebook)
    spec = cb.info.get("encoder_spec")
    if not spec:
        raise ConfigError(f"{codebook} does not name its encoder spec")
    src = load_feature_source(spec, cb.layer, device=device)
    return cb, src, UnitVocoder.from_checkpoint(vocoder, device=device)


def finished_output(out_dir: str | Path, speech_set: SpeechSet, codebook: str | Path,
                    vocoder: str | Path, opts: ResynthOptions = ResynthOptions()
                    ) -> dict[str, Any] | None:
    """The recorded info (``bitrate.json``) of ``out_dir`` when it holds the complete output
    that :func:`resynthesize` would write again, else ``None``: the same originals (content
    hash), codebook (fingerprint), vocoder checkpoint
    (:func:`~.unit_hifigan.checkpoint.checkpoint_id`), the options that change waveforms, and
    every written waveform still present. Loads no model."""
    from .unit_hifigan.checkpoint import checkpoint_id

    out_dir = Path(out_dir)
    try:
        out_set, info = load_result(out_dir)
    except (ConfigError, ValueError, OSError):
        return None
    same = (
        info.get("source_hash") == speech_set.content_hash()
        and (info.get("codebook") or {}).get("fingerprint") == Codebook.load(codebook).fingerprint()
        and info.get("vocoder_id") == checkpoint_id(vocoder)
        and all(info.get(k) == v for k, v in opts.identity().items())
        and (opts.system is None or info.get("system") == opts.system)
        and len(out_set) == len(speech_set)
        and all(Path(it.path).is_file() for it in out_set if it.ok)
    )
    return info if same else None
