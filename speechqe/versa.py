"""Reading a VERSA scoring configuration (``--versa-config score.yaml``).

A VERSA score config is a YAML list of entries ``{name: <metric>, <param>: <value>, ...}``
(``egs/*.yaml`` in wavlab-speech/versa). :func:`read_versa_config` maps every entry whose
metric speechqe computes to our metric names, with the parameters that have a meaning here,
and lists every entry, output and parameter it cannot carry over with the reason, so that the
command shows them before anything is scored (never a silent drop). ``docs/versa.md`` is the
user-facing table, and says where our definitions differ.

The names and parameters here were read from VERSA's registry (each metric's
``register_*_metric``, its aliases, and the keys its ``_setup`` reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .suites import SuiteEntry


@dataclass
class VersaMapping:
    """The outcome of reading a VERSA config.

    Attributes:
        entries: our metric entries, in the config's order.
        mapped: ``(versa name, our metric names)`` per mapped VERSA entry.
        notes: how parameters were carried over, and what differs (shown, not errors).
        unmapped: ``(what, reason)`` for every VERSA entry or output not computed here.
    """

    path: str
    entries: list[SuiteEntry] = field(default_factory=list)
    mapped: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unmapped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, versa: str, ref: str, params: dict[str, Any]) -> None:
        if any(e.name == ref for e in self.entries):
            self.unmapped.append((f"{versa} -> {ref}", f"{ref} is already given by an earlier entry"))
            return
        self.entries.append(SuiteEntry(ref, tuple(sorted(params.items()))))

    def report(self) -> list[str]:
        """Lines for the user: what maps to what, notes, and what is not scored."""
        lines = [f"{v} -> {', '.join(ours)}" for v, ours in self.mapped]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"not scored: {w}: {r}" for w, r in self.unmapped]
        return lines


# ------------------------------------------------------------------------------------------
# Entry translators: (mapping, entry) -> None
# ------------------------------------------------------------------------------------------
def _ignore(m: VersaMapping, name: str, params: dict[str, Any], known: dict[str, str]) -> None:
    """Note every parameter not carried over: with its reason when VERSA knows it, else as
    unknown to VERSA's metric too."""
    for k in sorted(params):
        if k in known:
            m.notes.append(f"{name}.{k} is not used: {known[k]}")
        else:
            m.notes.append(f"{name}.{k} is not a parameter of VERSA's {name}: ignored")


def _pesq(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
    m.add(name, "pesq", {})
    m.mapped.append((name, ("pesq",)))
    m.notes.append("pesq: always wide-band P.862.2 at 16 kHz (VERSA switches to narrow-band "
                   "below 16 kHz; add pesq_nb for narrow-band)")
    _ignore(m, name, p, {})


def _stoi(extended_default: bool) -> Callable[[VersaMapping, str, dict[str, Any]], None]:
    def translate(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
        ext = bool(p.pop("extended", extended_default))
        ours = "estoi" if ext else "stoi"
        m.add(name, ours, {})
        m.mapped.append((name, (ours,)))
        _ignore(m, name, p, {})
    return translate


_MCD_IGNORED = {
    "mcep_fftl": "the CheapTrick FFT size follows the 16 kHz analysis (pyworld's choice for f0_floor)",
    "mcep_alpha": "VERSA's all-pass constant is for the file's own rate; speechqe analyses at "
                  "16 kHz and uses alpha 0.41 there",
    "seq_mismatch_tolerance": "a frame-count ratio; speechqe bounds the length difference in "
                              "seconds (--param mcd.max_length_diff_s, f0.max_length_diff_s)",
    "power_threshold": "speechqe does not drop low-power frames before alignment",
}


def _mcd_f0(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
    params: dict[str, Any] = {}
    conv = {"f0min": ("f0_floor", float), "f0max": ("f0_ceil", float),
            "mcep_shift": ("frame_period_ms", float), "mcep_dim": ("mcep_order", int)}
    for k, (ours, typ) in conv.items():
        if k in p:
            try:
                params[ours] = typ(p.pop(k))
            except (TypeError, ValueError):
                raise ConfigError(f"{m.path}: {name}.{k} must be a number") from None
    if "dtw" in p:
        params["align"] = "dtw" if bool(p.pop("dtw")) else "none"
    else:
        params["align"] = "none"  # VERSA's default is dtw: false (frames in order)
        m.notes.append(f"{name}: no 'dtw' key, VERSA's default (dtw: false) -> align=none")
    m.add(name, "mcd", dict(params))
    m.add(name, "f0", dict(params))
    m.mapped.append((name, ("mcd", "f0")))
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    m.notes.append(f"{name}: mcd and f0 with {shown}; MCD excludes c0 and is computed at 16 kHz "
                   "(VERSA includes c0 at the file's rate); f0 RMSE is in cents (f0_rmse_cents; "
                   "VERSA's f0rmse is in Hz)")
    _ignore(m, name, p, _MCD_IGNORED)


def _signal(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
    m.add(name, "si_sdr", {"zero_mean": False})
    m.mapped.append((name, ("si_sdr",)))
    m.notes.append(f"{name}: si_snr -> si_sdr with zero_mean=false (VERSA's si_snr is "
                   "fast_bss_eval's SI-SDR without mean removal), at 16 kHz")
    for out in ("sdr", "sir", "sar"):
        m.unmapped.append((f"{name}.{out}", "BSS-eval (mir_eval) distortion ratios are not "
                                            "computed by speechqe"))
    m.unmapped.append((f"{name}.ci_sdr", "convolutive-invariant SDR is not computed by speechqe"))
    _ignore(m, name, p, {})


_PSEUDO_MOS = {"utmos": "utmos_strong", "dnsmos": "dnsmos", "plcmos": "plcmos"}
_PSEUDO_MOS_NOT = {
    "utmosv2": "UTMOSv2 is not available in speechqe",
    "aecmos": "AECMOS (echo cancellation) is not available in speechqe",
    "singmos": "singing MOS predictors are not available in speechqe",
    "singmos_v1": "singing MOS predictors are not available in speechqe",
    "singmos_v2": "singing MOS predictors are not available in speechqe",
    "singmos_pro": "singing MOS predictors are not available in speechqe",
}


def _pseudo_mos(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
    types = p.pop("predictor_types", ["utmos", "dnsmos", "plcmos"])  # VERSA's default
    if isinstance(types, str):
        types = [types]
    args = p.pop("predictor_args", {}) or {}
    ours_all = []
    for t in types:
        t = str(t)
        if t in _PSEUDO_MOS:
            ours = _PSEUDO_MOS[t]
            m.add(f"{name}.{t}", ours, {})
            ours_all.append(ours)
        elif t in _PSEUDO_MOS_NOT:
            m.unmapped.append((f"{name}.{t}", _PSEUDO_MOS_NOT[t]))
        elif t.startswith("dnsmos_pro_"):
            m.unmapped.append((f"{name}.{t}", "DNSMOS Pro is not available in speechqe"))
        else:
            m.unmapped.append((f"{name}.{t}", "not a VERSA pseudo_mos predictor (typo?)"))
    if ours_all:
        m.mapped.append((name, tuple(ours_all)))
    if args:
        m.notes.append(f"{name}.predictor_args is not used: each speechqe predictor declares "
                       "its own rate and the runner resamples to it")
    if "dnsmos" in ours_all:
        m.notes.append("dnsmos: VERSA's dns_overall/dns_p808 are speechqe's dnsmos_ovrl/"
                       "dnsmos_p808 (VERSA peak-normalises the input first; speechqe scores "
                       "the signal as it is)")
    _ignore(m, name, p, {})


def _speaker(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
    tag = p.pop("model_tag", "default")
    m.add(name, "speaker_sim", {})
    m.mapped.append((name, ("speaker_sim",)))
    m.notes.append(f"{name}: speaker_sim uses speechqe's speaker encoder (Resemblyzer by "
                   f"default), not VERSA's ESPnet-SPK model ({tag!r}); values differ between "
                   "encoders")
    _ignore(m, name, p, {})


_ASR_IGNORED = {
    "calc_per": "speechqe has no phoneme error rate",
}
_CLEANERS = {"whisper_basic": "basic", "whisper_en": "whisper-english", "none": "none"}


def _whisper(backend: str, default_model: str) -> Callable[[VersaMapping, str, dict[str, Any]], None]:
    def translate(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
        params: dict[str, Any] = {"backend": backend}
        tag = str(p.pop("model_tag", "default"))
        params["model"] = default_model if tag == "default" else tag
        for k in ("beam_size", "batch_size"):
            if k in p:
                params[k] = int(p.pop(k))
        if "compute_type" in p:
            params["compute_type"] = str(p.pop("compute_type"))
        cleaner = str(p.pop("text_cleaner", "whisper_basic"))
        if cleaner in _CLEANERS:
            params["normalizer"] = _CLEANERS[cleaner]
        else:
            m.notes.append(f"{name}.text_cleaner {cleaner!r} has no speechqe equivalent: "
                           "the default normaliser is used")
        if p.pop("calc_per", False):
            m.unmapped.append((f"{name}.per", _ASR_IGNORED["calc_per"]))
        m.add(name, "wer", dict(params))
        m.add(name, "cer", dict(params))
        m.mapped.append((name, ("wer", "cer")))
        m.notes.append(f"{name}: wer and cer with {backend} model {params['model'] or 'large-v3'}; "
                       "they are rates aggregated over the corpus (summed edits), VERSA writes "
                       "per-utterance edit counts (speechqe keeps them in each record's extra)")
        _ignore(m, name, p, {})
    return translate


def _unavailable(reason: str) -> Callable[[VersaMapping, str, dict[str, Any]], None]:
    def translate(m: VersaMapping, name: str, p: dict[str, Any]) -> None:
        m.unmapped.append((name, reason))
    return translate


_OTHER_ASR = "speechqe transcribes with Whisper only; use whisper_wer or fwhisper_wer"
_NO = "no speechqe metric computes this"

#: VERSA metric names (with their registered aliases) -> translator.
_TRANSLATORS: dict[str, Callable[[VersaMapping, str, dict[str, Any]], None]] = {}


def _register(names: tuple[str, ...], fn) -> None:
    for n in names:
        _TRANSLATORS[n] = fn


_register(("pesq", "Pesq", "perceptual_evaluation_speech_quality"), _pesq)
_register(("stoi", "STOI", "stoi_metric"), _stoi(False))
_register(("estoi", "ESTOI", "estoi_metric"), _stoi(True))
_register(("mcd_f0", "mcd", "mcd_f0_metric"), _mcd_f0)
_register(("signal_metric", "signal", "snr_related"), _signal)
_register(("pseudo_mos",), _pseudo_mos)
_register(("speaker", "spk_similarity", "speaker_similarity"), _speaker)
_register(("whisper_wer", "whisper_asr_wer", "whisper_wer_metric"),
          _whisper("openai-whisper", ""))
_register(("fwhisper_wer", "faster_whisper_wer", "fwhisper_asr_wer"),
          _whisper("faster-whisper", "large-v3"))
_register(("espnet_wer", "espnet_asr_wer", "espnet_wer_metric", "owsm_wer", "owsm_asr_wer",
           "owsm_wer_metric", "nemo_wer", "nemo_asr_wer", "hubert_wer", "hubert_asr_wer",
           "facebook_hubert_wer"), _unavailable(_OTHER_ASR))
_register(("nisqa", "Nisqa"), _unavailable("NISQA is not available in speechqe"))
_register(("utmosv2",), _unavailable("UTMOSv2 is not available in speechqe"))
_register(("squim_ref", "torch_squim_mos", "squim_no_ref", "squim", "torch_squim_objective"),
          _unavailable("TorchAudio-SQUIM is not available in speechqe"))
_register(("sheet_ssqa", "sheet", "sheet_ssqa_metric"),
          _unavailable("SHEET SSQA models are not available in speechqe (mos_strong / "
                       "utmos_strong are speechqe's SSL MOS predictors)"))
_register(("se_snr", "se_snr_metric", "speech_enhancement_snr"),
          _unavailable("speech-enhancement-based SNRs are not available in speechqe"))
_register(("visqol", "visqol_metric", "VISQOL"), _unavailable("ViSQOL is not available in speechqe"))
for _n in ("dpam", "dpam_distance", "DpamDistance", "cdpam", "cdpam_distance", "CdpamDistance",
           "srmr", "SRMR", "warpq", "warpq_metric", "warp_q", "discrete_speech", "DiscreteSpeech",
           "log_wmse", "log-wmse", "torch_log_wmse", "asr_match", "ASRMatch",
           "asr_match_error_rate", "pysepm", "pysepm_metric", "noresqa", "nomad", "Nomad",
           "emotion", "emo2vec_similarity", "emo_vad", "EmoVad", "lid", "owsm_lid", "OwsmLid",
           "language_id", "speaking_rate", "speaking_rate_metric", "swr", "vad", "vad_metric",
           "silero_vad", "asvspoof", "asvspoof_score", "ASVSpoof", "audiobox_aesthetics",
           "AudioBoxAesthetics", "pam", "Pam", "perceptual_audio_metric", "scoreq_ref",
           "scoreq_reference", "scoreq_nr", "scoreq", "scoreq_metric", "scoreq_no_ref",
           "universa", "universa_noref", "universa_audioref", "universa_textref",
           "universa_fullref", "arecho", "arecho_noref", "fad", "kid", "clap_score", "clap",
           "clapscore", "chroma_alignment", "ChromaAlignment", "vqscore", "vq_score",
           "vqscore_metric", "wvmos", "Wvmos", "wv_mos", "sigmos", "Sigmos", "sig_mos", "singer",
           "singer_similarity", "singer_identity", "apa", "kl_embedding",
           "audio_density_coverage"):
    _TRANSLATORS[_n] = _unavailable(_NO)


def read_versa_config(path: str | Path) -> VersaMapping:
    """Map a VERSA score config to speechqe metric entries.

    Raises:
        ConfigError: the file is missing, is not YAML, is not a list of ``{name: ...}``
            entries, or maps to no metric at all.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"VERSA config not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, list):
        raise ConfigError(f"{path}: a VERSA score config is a list of '- name: <metric>' entries")
    m = VersaMapping(str(path))
    for k, raw in enumerate(doc, 1):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ConfigError(f"{path}: entry {k} is not a mapping with a 'name' ({raw!r})")
        params = {kk: v for kk, v in raw.items() if kk != "name"}
        name = raw["name"].strip()
        fn = _TRANSLATORS.get(name)
        if fn is None:
            m.unmapped.append((name, "not a VERSA metric name that speechqe knows (typo? see "
                                     "docs/versa.md)"))
            continue
        fn(m, name, params)
    if not m.entries:
        raise ConfigError(
            f"{path}: no entry maps to a speechqe metric: "
            + "; ".join(f"{w}: {r}" for w, r in m.unmapped)
        )
    return m


def known_names() -> tuple[str, ...]:
    """Every VERSA config name (and alias) this module recognises."""
    return tuple(sorted(_TRANSLATORS))
