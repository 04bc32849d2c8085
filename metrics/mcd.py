"""Mel-cepstral distortion adapter: WORLD CheapTrick envelope -> SPTK mel-cepstrum -> DTW."""

from __future__ import annotations

from . import world as shared
from speechqe.metric import ItemScore, MetricSpec, OutputSpec, ScoringInput
from .functional import mcd as F


class McdParams(shared.AlignedWorldParams):
    """The shared WORLD analysis and alignment settings plus ``include_c0`` (the energy
    coefficient, excluded by default)."""

    include_c0: bool = False


class Mcd(shared.WorldMetric):
    """MCD (dB) over the DTW-aligned frames of the signal and its reference: c_1..c_24 of the
    SPTK mel-cepstrum of the WORLD envelope, 16 kHz, alpha 0.41 (see ``docs/metrics.md``)."""

    Params = McdParams
    spec = MetricSpec(
        name="mcd",
        version="1",
        outputs=(
            OutputSpec("mcd", higher_is_better=False, valid_range=(0.0, None), unit="dB",
                       regression_threshold=0.1,
                       description="Mel-cepstral distortion, DTW-aligned, c0 excluded"),
        ),
        sample_rate=shared.WORLD_RATE,
        needs_reference=True,
        min_duration=0.1,
        max_duration=shared.MAX_SECONDS,
        length_rule=shared.LENGTH_RULE,
        kind="intrusive",
        description="Mel-cepstral distortion with DTW (Kubichek 1993; WORLD + SPTK)",
        core="speechqe.metrics.functional.mcd",
        source="pyworld (WORLD Harvest + CheapTrick) + pysptk sp2mc; own DTW",
        licence="Apache-2.0 (speechqe); WORLD modified-BSD; SPTK BSD",
    )

    def score_item(self, inp: ScoringInput) -> ItemScore:
        p = self.params
        pairs = shared.frame_pairs(inp, p, p.include_c0)
        ref, deg = shared.features(inp, "ref", p), shared.features(inp, "deg", p)
        value = F.mcd(ref.mcep, deg.mcep, pairs, include_c0=p.include_c0)
        return ItemScore({"mcd": value}, extra={"frames_ref": ref.frames,
                                                "frames_deg": deg.frames,
                                                "pairs": int(pairs.shape[0])})
