"""A labelled set of degraded real speech, for demos and acceptance tests.

Clean clips are degraded with :mod:`speechqe.degrade` under controlled conditions, each with a
*designed* quality label on the 1-5 scale: monotone in severity within a degradation type and
ordered across types by how much of the signal they destroy. The labels are a known target
for learning, not listening-test MOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from speechqe import degrade as D
from speechqe.manifest import SpeechSet, describe_file

SR = 16000


@dataclass(frozen=True)
class Condition:
    name: str
    label: float
    apply: Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]


def _white(snr):
    return lambda x, rng, bab: D.add_noise(x, D.white_noise(x.size, rng), snr)


def _babble(snr):
    return lambda x, rng, bab: D.add_noise(x, bab, snr)


CONDITIONS: tuple[Condition, ...] = (
    Condition("clean", 4.8, lambda x, rng, bab: x),
    Condition("white30", 4.3, _white(30)),
    Condition("white20", 3.6, _white(20)),
    Condition("white10", 2.7, _white(10)),
    Condition("white0", 1.5, _white(0)),
    Condition("babble15", 3.3, _babble(15)),
    Condition("babble5", 2.1, _babble(5)),
    Condition("lp4k", 3.9, lambda x, rng, bab: D.band_limit(x, SR, 4000)),
    Condition("lp2k", 3.0, lambda x, rng, bab: D.band_limit(x, SR, 2000)),
    Condition("lp1k", 2.0, lambda x, rng, bab: D.band_limit(x, SR, 1000)),
    Condition("mulaw6", 3.4, lambda x, rng, bab: D.mu_law(x, bits=6)),
    Condition("mulaw4", 2.3, lambda x, rng, bab: D.mu_law(x, bits=4)),
    Condition("clip03", 3.2, lambda x, rng, bab: D.hard_clip(x, 0.3)),
    Condition("clip01", 2.2, lambda x, rng, bab: D.hard_clip(x, 0.1)),
    Condition("lp3k_white15", 2.5, lambda x, rng, bab: D.add_noise(D.band_limit(x, SR, 3000), D.white_noise(x.size, rng), 15)),
    Condition("mulaw5_clip02", 1.9, lambda x, rng, bab: D.mu_law(D.hard_clip(x, 0.2), bits=5)),
)


@dataclass(frozen=True)
class Clip:
    id: str
    signal: np.ndarray  # 16 kHz mono float32
    text: str | None
    speaker: str


def corpus_clips(root: str | Path, *, ljspeech: int = 20, librispeech_per_speaker: int = 1,
                 max_seconds: float = 4.0) -> list[Clip]:
    """Clips from ``../shared/corpora``: LJSpeech (with transcripts) and LibriSpeech test-other
    (no transcripts: each clip's id stands for its text), peak-normalised, at most
    ``max_seconds`` long."""
    from speechqe.audio import LoadedAudio
    from speechqe.manifest import read_transcripts

    root = Path(root)
    clips: list[Clip] = []
    lj = root / "ljspeech-32"
    if lj.is_dir():
        texts = read_transcripts(lj / "transcripts.tsv")
        for p in sorted((lj / "wavs").glob("*.wav"))[:ljspeech]:
            x = LoadedAudio.from_file(p).at(SR)[: int(max_seconds * SR)]
            clips.append(Clip(p.stem, D.normalise_peak(x, 0.8), texts.get(p.stem), "LJ"))
    ls = root / "librispeech-test-other-spk"
    if ls.is_dir():
        for spk in sorted(d for d in ls.iterdir() if d.is_dir()):
            for p in sorted(spk.glob("*.flac"))[:librispeech_per_speaker]:
                x = LoadedAudio.from_file(p).at(SR)[: int(max_seconds * SR)]
                clips.append(Clip(p.stem, D.normalise_peak(x, 0.8), None, spk.name))
    return clips


def build_degraded_set(clips: Sequence[Clip], out_dir: str | Path, *,
                       conditions: Sequence[Condition] = CONDITIONS, seed: int = 0) -> SpeechSet:
    """Write every clip under every condition to ``out_dir/<condition>/<clip>.wav`` (16 kHz,
    16-bit) and return the labelled set: ``system`` = condition, ``mos`` = its label,
    ``text`` = the transcript (``None`` when unknown), ``speaker``, ``extra['clip']``."""
    import soundfile as sf

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    items = []
    for k, clip in enumerate(clips):
        others = [c.signal for j, c in enumerate(clips) if j != k][:4] or [clip.signal]
        bab = D.babble(others, clip.signal.size, rng)
        for cond in conditions:
            y = np.clip(cond.apply(clip.signal, rng, bab), -1.0, 1.0).astype(np.float32)
            path = out_dir / cond.name / f"{clip.id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y, SR, subtype="PCM_16")
            items.append(describe_file(
                path, item_id=f"{cond.name}/{clip.id}", system=cond.name, mos=cond.label,
                text=clip.text, speaker=clip.speaker, extra=(("clip", clip.id), ("domain", "degraded")),
            ))
    return SpeechSet(tuple(items), name="degraded-corpora", source=str(out_dir))


# ------------------------------------------------------------------------------------------
# A listening-test-like set: few conditions x few sentences, 0-100 ratings of listeners
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestCondition:
    """A degradation with the physical parameters the simulated listeners react to.

    ``noise``: ``white`` or ``babble`` at ``snr_db``; ``cutoff_hz``: low-pass; ``clip``: hard
    clipping at this share of the clip's peak; ``mulaw_bits``: mu-law quantisation."""

    name: str
    noise: str = ""
    snr_db: float = 0.0
    cutoff_hz: float = 0.0
    clip: float = 0.0
    mulaw_bits: int = 0

    def apply(self, x: np.ndarray, rng: np.random.Generator, bab: np.ndarray) -> np.ndarray:
        y = x
        if self.cutoff_hz:
            y = D.band_limit(y, SR, self.cutoff_hz)
        if self.clip:
            y = D.hard_clip(y, self.clip)
        if self.mulaw_bits:
            y = D.mu_law(y, bits=self.mulaw_bits)
        if self.noise == "white":
            y = D.add_noise(y, D.white_noise(y.size, rng), self.snr_db)
        elif self.noise == "babble":
            y = D.add_noise(y, bab, self.snr_db)
        return y

    def quality(self) -> float:
        """The simulated listeners' hidden quality of the condition, 0-100: a non-linear
        (logistic in SNR, logarithmic in bandwidth, power-law in distortion), multiplicative
        function of the parameters. Not a model of any real test; a designed truth."""
        i_noise = 0.0
        if self.noise:
            i_noise = 1.0 / (1.0 + np.exp((self.snr_db - 12.0) / 4.0)) * (1.25 if self.noise == "babble" else 1.0)
        i_bw = 0.0
        if self.cutoff_hz:
            i_bw = float(np.clip(np.log2(7000.0 / self.cutoff_hz) / np.log2(7000.0 / 500.0), 0, 1)) ** 0.7
        i_dist = 0.0
        if self.clip:
            i_dist = max(i_dist, (1.0 - self.clip) ** 1.5)
        if self.mulaw_bits:
            i_dist = max(i_dist, 2.0 ** -(self.mulaw_bits - 3))
        q = (1 - min(i_noise, 1.0)) * (1 - 0.8 * i_bw) * (1 - 0.9 * i_dist)
        return float(5.0 + 90.0 * q ** 1.3)


#: Eight conditions in three clusters of near-equal quality (about 95, 73 and 59), as in a
#: listening test of systems that are all usable: the conditions rank easily, the clips within
#: them do not.
LISTENING_CONDITIONS: tuple[TestCondition, ...] = (
    TestCondition("clean"),
    TestCondition("white30", noise="white", snr_db=30),
    TestCondition("white18", noise="white", snr_db=18),
    TestCondition("lp5k", cutoff_hz=5000),
    TestCondition("mulaw6-lp6k", mulaw_bits=6, cutoff_hz=6000),
    TestCondition("babble16", noise="babble", snr_db=16),
    TestCondition("tel3k4", cutoff_hz=3400),
    TestCondition("clip50", clip=0.5),
)


def listening_test(clips: Sequence[Clip], out_dir: str | Path, *,
                   conditions: Sequence[TestCondition] = LISTENING_CONDITIONS, listeners: int = 24,
                   ratings_per_clip: int = 8, sentence_sd: float = 8.0, listener_bias_sd: float = 8.0,
                   listener_slope_sd: float = 0.15, rating_sd: float = 15.0, seed: int = 0) -> Path:
    """Write every clip under every condition and a SHEET CSV of simulated listener ratings
    (``out_dir/ratings.csv``, one row per rating, 0-100); returns the CSV's path.

    A rating of clip ``c`` (sentence ``s``) by listener ``l`` is
    ``clip(50 + slope_l * (q_c + offset_s - 50) + bias_l + noise, 0, 100)``, rounded, with
    ``q_c`` the condition's :meth:`TestCondition.quality`, a per-sentence offset
    (``sentence_sd``: content that listeners like or not, invisible in the degradation), a
    per-listener bias and slope (scale use), and rating noise; each clip is rated by
    ``ratings_per_clip`` listeners drawn from ``listeners``. Columns: ``wav_path, system_id``
    (the condition), ``sample_id`` (``condition-clip``), ``listener_id, score, speaker,
    sentence, quality`` (the hidden ``q_c + offset_s``, for analysis only).
    """
    import csv

    import soundfile as sf

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, sentence_sd, len(clips))
    bias = rng.normal(0.0, listener_bias_sd, listeners)
    slope = rng.normal(1.0, listener_slope_sd, listeners)
    rows = []
    for k, clip in enumerate(clips):
        others = [c.signal for j, c in enumerate(clips) if j != k][:4] or [clip.signal]
        bab = D.babble(others, clip.signal.size, rng)
        for cond in conditions:
            y = np.clip(cond.apply(clip.signal, rng, bab), -1.0, 1.0).astype(np.float32)
            rel = Path("wav") / cond.name / f"{clip.id}.wav"
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(out_dir / rel, y, SR, subtype="PCM_16")
            q = cond.quality() + offsets[k]
            for lis in rng.choice(listeners, ratings_per_clip, replace=False):
                r = 50.0 + slope[lis] * (q - 50.0) + bias[lis] + rng.normal(0.0, rating_sd)
                rows.append([rel.as_posix(), cond.name, f"{cond.name}-{clip.id}", f"L{lis:02d}",
                             int(round(float(np.clip(r, 0, 100)))), clip.speaker, clip.id, f"{q:.3f}"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ratings.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["wav_path", "system_id", "sample_id", "listener_id", "score", "speaker", "sentence", "quality"])
        w.writerows(rows)
    return path


def listening_test_config(csv_path: str | Path, *, seed: int = 0, cache: str = "off") -> dict:
    """The training config of the listening-test acceptance set (cheap features only, so that
    it runs in CI): signal descriptors and pooled log-mel, ridge / SVR / kNN / GP, 4 folds
    grouped by sentence, nested estimate on, 0-100 scale."""
    return {
        "train": {"format": "sheet", "path": str(csv_path)},
        "score_range": [0, 100], "folds": 4, "group_by": "sentence", "seed": seed,
        "device": "cpu", "cache": cache,
        "weak": {"features": [{"name": "signal", "source": "signal"},
                              {"name": "logmel", "encoder": {"kind": "logmel"}}],
                 "learners": [{"kind": "ridge"}, {"kind": "svr"}, {"kind": "knn"}, {"kind": "gp"}]},
    }
