"""SI-SDR adapter (own numpy core, checked against torchmetrics)."""

from __future__ import annotations

from speechqe.config import StrictModel
from speechqe.metric import ItemScore, Metric, MetricSpec, OutputSpec, ScoringInput
from .functional.align import MAX_LENGTH_DIFF_S, MaxLengthDiff, match_lengths
from .functional.sisdr import si_sdr


class SiSdrParams(StrictModel):
    """``zero_mean``: remove the means first (the paper's definition); ``max_length_diff_s``:
    largest length difference (seconds) trimmed from the end, above it ``length_mismatch``."""

    zero_mean: bool = True
    max_length_diff_s: MaxLengthDiff = MAX_LENGTH_DIFF_S


class SiSdr(Metric):
    """Scale-invariant signal-to-distortion ratio (Le Roux et al., ICASSP 2019)."""

    Params = SiSdrParams
    spec = MetricSpec(
        name="si_sdr",
        version="1",
        outputs=(
            OutputSpec("si_sdr", higher_is_better=True, unit="dB", regression_threshold=0.1,
                       description="Scale-invariant SDR, zero-mean"),
        ),
        sample_rate=16000,
        needs_reference=True,
        min_duration=0.0,
        max_duration=600.0,
        length_rule="whole signal (~0.3 MB per second of audio); refused above 600 s",
        kind="intrusive",
        description="Scale-invariant signal-to-distortion ratio (Le Roux et al., ICASSP 2019)",
        core="speechqe.metrics.functional.sisdr",
        source="own numpy core, equal to torchmetrics scale_invariant_signal_distortion_ratio",
        licence="Apache-2.0 (speechqe)",
    )

    def score_item(self, inp: ScoringInput) -> ItemScore:
        sr = self.spec.sample_rate
        ref, deg = match_lengths(inp.reference(sr), inp.signal(sr), sr,
                                 self.params.max_length_diff_s)
        return ItemScore({"si_sdr": si_sdr(ref, deg, zero_mean=self.params.zero_mean)})
