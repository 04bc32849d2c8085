"""Small, exact metrics used to test the runner, store and CLI without model weights.

Loaded through ``SPEECHQE_PLUGINS=plugins.toy_metrics`` (tests/ on sys.path), which also tests
the plugin mechanism.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from speechqe.errors import LengthMismatchError
from speechqe.metric import ItemScore, Metric, MetricSpec, OutputSpec, ScoringInput


class Concurrency:
    """How many ``toy_level`` batches run at once in this process (threads of a flow's task
    runner): measured inside the metric, so it counts real overlap, not scheduling times."""

    lock = threading.Lock()
    active = 0
    max_active = 0

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.active = cls.max_active = 0

    @classmethod
    def enter(cls) -> None:
        with cls.lock:
            cls.active += 1
            cls.max_active = max(cls.max_active, cls.active)

    @classmethod
    def leave(cls) -> None:
        with cls.lock:
            cls.active -= 1


@dataclass(frozen=True)
class DelayParams:
    delay_s: float = 0.0


class PeakLevel(Metric):
    """Peak level in dBFS at the native rate; ``rms_db`` too (two outputs)."""

    spec = MetricSpec(
        name="toy_level",
        version="1",
        outputs=(
            OutputSpec("toy_peak_db", higher_is_better=None, valid_range=(None, 0.0), unit="dBFS"),
            OutputSpec("toy_rms_db", higher_is_better=None, valid_range=(None, 0.0), unit="dBFS"),
        ),
        sample_rate=None,
        batched=True,
        kind="non-intrusive",
        description="peak and RMS level",
    )
    Params = DelayParams

    def score_batch(self, inputs):
        if self.params.delay_s:
            Concurrency.enter()
            try:
                time.sleep(self.params.delay_s * len(inputs))
            finally:
                Concurrency.leave()
        out = []
        for inp in inputs:
            x = inp.signal(None).astype(np.float64)
            out.append(
                ItemScore(
                    {
                        "toy_peak_db": 20 * np.log10(np.abs(x).max()),
                        "toy_rms_db": 10 * np.log10(np.mean(x**2)),
                    },
                    extra={"samples": int(x.size)},
                )
            )
        return out


class RefSNR(Metric):
    """SNR of the item against its reference at 16 kHz (equal lengths required)."""

    spec = MetricSpec(
        name="toy_snr",
        version="1",
        outputs=(OutputSpec("toy_snr", higher_is_better=True, unit="dB"),),
        sample_rate=16000,
        needs_reference=True,
        min_duration=0.05,
        kind="intrusive",
    )

    def score_item(self, inp: ScoringInput) -> ItemScore:
        x = inp.signal(16000).astype(np.float64)
        r = inp.reference(16000).astype(np.float64)
        if x.size != r.size:
            raise LengthMismatchError(f"{x.size} vs {r.size} samples")
        inp.cached("toy_shared_calls", lambda: [])  # visible to other metrics on this item
        return ItemScore({"toy_snr": 10 * np.log10(np.sum(r**2) / max(np.sum((x - r) ** 2), 1e-20))})


class WordCount(Metric):
    """Words in the transcript per second of audio; aggregated as a ratio of sums."""

    spec = MetricSpec(
        name="toy_rate",
        version="1",
        outputs=(
            OutputSpec("toy_words_per_s", higher_is_better=None, aggregation="ratio",
                       ratio=("words", "seconds")),
        ),
        needs_text=True,
    )

    def score_item(self, inp):
        words = len(inp.require_text().split())
        seconds = inp.audio.duration
        return ItemScore({"toy_words_per_s": words / seconds}, extra={"words": words, "seconds": seconds})


class Broken(Metric):
    """Raises a non-ItemError for items whose id contains 'boom'; out-of-range otherwise for
    'range'; used to test isolation of unexpected failures."""

    spec = MetricSpec(
        name="toy_broken",
        version="1",
        outputs=(OutputSpec("toy_broken", higher_is_better=True, valid_range=(0.0, 1.0)),),
        batched=True,
    )

    def score_batch(self, inputs):
        if any("boom" in inp.item.id for inp in inputs):
            raise RuntimeError("kaboom in a batch")
        return [ItemScore({"toy_broken": 2.0 if "range" in inp.item.id else 0.5}) for inp in inputs]


class Flaky(Metric):
    """Duration in seconds, except where the test put a marker beside the audio file:
    ``<file>.fail`` -> a ``metric_failed`` error (a transient failure the test can clear);
    ``<file>.interrupt`` -> ``KeyboardInterrupt`` (Ctrl-C in the middle of a run)."""

    spec = MetricSpec(
        name="toy_flaky",
        version="1",
        outputs=(OutputSpec("toy_seconds", higher_is_better=None, valid_range=(0.0, None)),),
    )

    def score_item(self, inp):
        from pathlib import Path

        from speechqe.errors import MetricComputationError

        if Path(inp.item.path + ".interrupt").exists():
            raise KeyboardInterrupt
        if Path(inp.item.path + ".fail").exists():
            raise MetricComputationError("transient failure (marker file)")
        return ItemScore({"toy_seconds": inp.audio.duration})


class AssetDuration(Metric):
    """Duration in seconds, from a metric that loads a pretrained asset in ``setup`` (the
    packaged DNSMOS files, verified but unused): tests that runs record asset versions."""

    spec = MetricSpec(
        name="toy_asset",
        version="1",
        outputs=(OutputSpec("toy_seconds", higher_is_better=None, valid_range=(0.0, None), unit="s"),),
    )

    def setup(self):
        from speechqe import assets

        assets.get("dnsmos-p835").path()

    def score_item(self, inp):
        return ItemScore({"toy_seconds": inp.audio.duration})


class ToyASR(Metric):
    """A stand-in for an ASR metric (no model): its "hypothesis" is the transcript with the
    first word replaced by "uh" and, for items louder than -12 dBFS RMS, the last word dropped;
    the output is the word error rate against the transcript, aggregated as summed edits over
    summed reference words, with the hypothesis and counts in ``extra`` like the WER metric."""

    spec = MetricSpec(
        name="toy_asr",
        version="1",
        outputs=(OutputSpec("toy_wer", higher_is_better=False, valid_range=(0.0, None),
                            aggregation="ratio", ratio=("edits", "ref_words")),),
        needs_text=True,
        kind="asr",
    )

    def score_item(self, inp):
        words = inp.require_text().split()
        x = inp.signal(None).astype(np.float64)
        hyp = ["uh"] + words[1:]
        if 10 * np.log10(np.mean(x**2)) > -12 and len(hyp) > 1:
            hyp = hyp[:-1]
        edits = int(words[0] != "uh") + (len(words) - len(hyp))
        return ItemScore({"toy_wer": edits / len(words)},
                         extra={"hypothesis": " ".join(hyp), "edits": edits, "ref_words": len(words)})


class WindowedPeak(Metric):
    """Peak level (dBFS) over 1 s windows at the native rate: a windowed metric (no maximum
    duration), scoring a long input read window by window (``StreamedAudio``) or a decoded
    one alike."""

    spec = MetricSpec(
        name="toy_windowed",
        version="1",
        outputs=(OutputSpec("toy_window_peak_db", higher_is_better=None, valid_range=(None, 0.0),
                            unit="dBFS"),),
        max_duration=None,
        length_rule="any length: 1 s windows, maximum over windows",
    )

    def score_item(self, inp):
        from speechqe.streaming import StreamedAudio

        a = inp.audio
        if isinstance(a, StreamedAudio):
            n, sr = a.frames, a.sample_rate
            peak = max(float(np.abs(a.read(k, k + sr)).max()) for k in range(0, n, sr))
        else:
            peak = float(np.abs(a.samples).max())
        return ItemScore({"toy_window_peak_db": 20 * np.log10(peak)},
                         extra={"streamed": isinstance(a, StreamedAudio)})
