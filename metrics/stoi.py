"""STOI and ESTOI adapters (``pystoi``), fed at STOI's own 10 kHz rate."""

from __future__ import annotations

from speechqe.config import StrictModel
from speechqe.metric import (
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    params_id,
)
from .functional import stoi as F
from .functional.align import MAX_LENGTH_DIFF_S, MaxLengthDiff, match_lengths
from .pesq import lib_version


class LengthParams(StrictModel):
    """``max_length_diff_s``: largest reference/signal length difference (seconds) trimmed
    from the end; a larger one is a ``length_mismatch`` error."""

    max_length_diff_s: MaxLengthDiff = MAX_LENGTH_DIFF_S


class Stoi(Metric):
    """Short-time objective intelligibility (Taal et al. 2011)."""

    extended = False
    Params = LengthParams
    spec = MetricSpec(
        name="stoi",
        version="1",
        outputs=(
            OutputSpec("stoi", higher_is_better=True, valid_range=(-1.0, 1.0), regression_threshold=0.01,
                       description="STOI, mean short-time envelope correlation (mostly 0-1)"),
        ),
        sample_rate=F.STOI_RATE,
        needs_reference=True,
        min_duration=0.4,
        kind="intrusive",
        description="Short-time objective intelligibility (Taal et al., IEEE TASLP 2011)",
        core="speechqe.metrics.functional.stoi",
        source="pystoi (mpariente/pystoi), a port of Taal's MATLAB reference",
        licence="MIT (pystoi)",
    )

    def model_id(self) -> str:
        return f"{params_id(self.params)}/pystoi-{lib_version('pystoi')}"

    def setup(self) -> None:
        import pystoi  # noqa: F401

    def score_item(self, inp: ScoringInput) -> ItemScore:
        sr = self.spec.sample_rate
        ref, deg = match_lengths(inp.reference(sr), inp.signal(sr), sr,
                                 self.params.max_length_diff_s)
        return ItemScore({self.spec.outputs[0].name: F.stoi(ref, deg, sr, self.extended)})


class Estoi(Stoi):
    """Extended STOI (Jensen & Taal 2016), robust to modulated maskers."""

    extended = True
    spec = MetricSpec(
        name="estoi",
        version="1",
        outputs=(
            OutputSpec("estoi", higher_is_better=True, valid_range=(-1.0, 1.0), regression_threshold=0.01,
                       description="Extended STOI (mostly 0-1)"),
        ),
        sample_rate=F.STOI_RATE,
        needs_reference=True,
        min_duration=0.4,
        kind="intrusive",
        description="Extended short-time objective intelligibility (Jensen & Taal, TASLP 2016)",
        core="speechqe.metrics.functional.stoi",
        source="pystoi (mpariente/pystoi), extended=True",
        licence="MIT (pystoi)",
    )
