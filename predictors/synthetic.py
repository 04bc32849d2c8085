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
