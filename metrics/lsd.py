"""Log-spectral distance adapter, evaluated at the reference's native rate."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from speechqe.config import Float, Int, StrictModel
from speechqe.metric import ItemScore, Metric, MetricSpec, OutputSpec, ScoringInput
from .functional import lsd as F
from .functional.align import MAX_LENGTH_DIFF_S, MaxLengthDiff, match_lengths


class LsdParams(StrictModel):
    """STFT size ``n_fft`` >= 2 and ``hop`` (0 < hop <= n_fft) in samples, the power floor
    ``eps`` > 0, and the length tolerance ``max_length_diff_s`` (seconds)."""

    n_fft: Annotated[Int, Field(ge=2)] = F.N_FFT
    hop: Annotated[Int, Field(gt=0)] = F.HOP
    eps: Annotated[Float, Field(gt=0)] = F.EPS
    max_length_diff_s: MaxLengthDiff = MAX_LENGTH_DIFF_S

    @model_validator(mode="after")
    def _hop(self) -> "LsdParams":
        if self.hop > self.n_fft:
            raise ValueError(f"need hop <= n_fft (got hop={self.hop}, n_fft={self.n_fft})")
        return self


class Lsd(Metric):
    """LSD = mean over frames of the RMS (over bins) log10 power-spectrum difference.

    Evaluated at the reference's native sample rate (the bandwidth a super-resolution or
    codec system must restore); the signal is brought to that rate by the runner's resampler
    (:meth:`LoadedAudio.at`).
    """

    Params = LsdParams
    spec = MetricSpec(
        name="lsd",
        version="1",
        outputs=(
            OutputSpec("lsd", higher_is_better=False, valid_range=(0.0, None),
                       unit="log10 power", regression_threshold=0.02, description="Log-spectral distance (x10 for dB)"),
        ),
        sample_rate=None,
        needs_reference=True,
        min_duration=0.05,
        max_duration=600.0,
        length_rule="whole signal (STFT of the full pair, ~1.3 MB per second of 16 kHz audio); "
                    "refused above 600 s",
        kind="intrusive",
        description="Log-spectral distance, speech super-resolution convention",
        core="speechqe.metrics.functional.lsd",
        source="own numpy core from the definition (Kuleshov et al. 2017; NU-Wave 2021)",
        licence="Apache-2.0 (speechqe)",
    )

    def score_item(self, inp: ScoringInput) -> ItemScore:
        ref = inp.reference(None)
        sr = inp.ref.sample_rate  # type: ignore[union-attr]  (reference() checked it exists)
        ref, deg = match_lengths(ref, inp.signal(sr), sr, self.params.max_length_diff_s)
        p = self.params
        return ItemScore({"lsd": F.lsd(ref, deg, p.n_fft, p.hop, p.eps)},
                         extra={"sample_rate": sr})
