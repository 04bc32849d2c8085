"""F0 adapter: RMSE in cents, correlation and V/UV error over aligned WORLD F0 contours."""

from __future__ import annotations

from speechqe.errors import MetricComputationError

from . import world as shared
from speechqe.metric import ItemScore, MetricSpec, OutputSpec, ScoringInput
from .functional.f0 import f0_scores


class F0(shared.WorldMetric):
    """F0 accuracy against the reference (pyworld Harvest at 16 kHz, 5 ms frames).

    With ``align='dtw'`` (default) the frames are paired by the DTW path between the two
    mel-cepstra, the same path (and the same analysis) as ``mcd``, shared per item.
    """

    Params = shared.AlignedWorldParams
    spec = MetricSpec(
        name="f0",
        version="3",
        outputs=(
            OutputSpec("f0_rmse_cents", higher_is_better=False, valid_range=(0.0, None),
                       unit="cents", regression_threshold=10.0, description="RMSE of 1200 log2(f_deg / f_ref) over frames "
                       "voiced in both"),
            OutputSpec("f0_corr", higher_is_better=True, valid_range=(-1.0, 1.0), regression_threshold=0.01,
                       description="Pearson correlation of F0 (Hz) over frames voiced in both"),
            OutputSpec("vuv_error", higher_is_better=False, valid_range=(0.0, 1.0),
                       unit="fraction", regression_threshold=0.01, description="Fraction of aligned frames whose "
                       "voicing decisions differ"),
            OutputSpec("f0_gpe", higher_is_better=False, valid_range=(0.0, 1.0),
                       unit="fraction", regression_threshold=0.01, description="Gross pitch error: fraction of frames "
                       "voiced in both whose F0 deviates by more than 20%"),
        ),
        sample_rate=shared.WORLD_RATE,
        needs_reference=True,
        min_duration=0.1,
        max_duration=shared.MAX_SECONDS,
        length_rule=shared.LENGTH_RULE,
        kind="intrusive",
        description="F0 RMSE (cents), F0 correlation, voicing error and gross pitch error after alignment",
        core="speechqe.metrics.functional.f0",
        source="pyworld (WORLD Harvest or DIO+StoneMask); DTW on SPTK mel-cepstra",
        licence="Apache-2.0 (speechqe); WORLD modified-BSD; SPTK BSD",
    )

    def score_item(self, inp: ScoringInput) -> ItemScore:
        p = self.params
        pairs = shared.frame_pairs(inp, p, include_c0=False)
        ref, deg = shared.features(inp, "ref", p), shared.features(inp, "deg", p)
        s = f0_scores(ref.f0, deg.f0, pairs)
        errors = {name: MetricComputationError(why) for name, why in s.undefined}
        return ItemScore(s.values(), extra=s.counts(), errors=errors)
