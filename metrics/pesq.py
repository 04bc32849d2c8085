"""PESQ adapters: ``pesq`` (ITU-T P.862.2 wide-band, 16 kHz) and ``pesq_nb`` (P.862 with the
P.862.1 mapping, narrow-band, 8 kHz), via the ``pesq`` package."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from speechqe.errors import SampleRateError

from speechqe.metric import (
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    params_id,
)
from .functional import pesq as F

_SOURCE = "ITU-T P.862 / P.862.1 / P.862.2 reference code via the 'pesq' package (ludlows)"
_LICENCE = "ITU-T P.862 licence (reference code); wrapper MIT"
#: Longest input (seconds): the ITU code holds the whole pair (~0.7 MB per second of 16 kHz
#: audio, ``bench/bench_lengths.py``); P.862 itself is specified for 8-30 s recordings.
MAX_SECONDS = 600.0
_LENGTH_RULE = f"whole signal (ITU-T reference code on the full pair); refused above {MAX_SECONDS:g} s"


def lib_version(dist: str) -> str:
    """Installed version of a distribution (part of model ids: a new library re-scores)."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


class Pesq(Metric):
    """Wide-band PESQ (MOS-LQO) of a signal against its reference."""

    mode = "wb"
    spec = MetricSpec(
        name="pesq",
        version="1",
        outputs=(
            OutputSpec("pesq", higher_is_better=True, valid_range=(0.999, 4.65), unit="MOS-LQO",
                       regression_threshold=0.05,
                       description="ITU-T P.862.2 wide-band PESQ, MOS-LQO 0.999-4.64"),
        ),
        sample_rate=16000,
        needs_reference=True,
        min_duration=F.MIN_SECONDS,
        max_duration=MAX_SECONDS,
        length_rule=_LENGTH_RULE,
        kind="intrusive",
        description="Perceptual evaluation of speech quality, wide-band (P.862.2)",
        core="speechqe.metrics.functional.pesq",
        source=_SOURCE,
        licence=_LICENCE,
    )

    def model_id(self) -> str:
        return f"{params_id(self.params)}/pesq-{lib_version('pesq')}"

    def setup(self) -> None:
        import pesq  # noqa: F401  (fail at set-up, not on the first item)

    def score_item(self, inp: ScoringInput) -> ItemScore:
        sr = self.spec.sample_rate
        if inp.ref is not None and inp.ref.sample_rate < sr:
            # The signal may be band-limited (that is what PESQ measures), the reference not:
            # an upsampled reference would make the missing band look like no loss.
            raise SampleRateError(
                f"the reference is sampled at {inp.ref.sample_rate} Hz; {self.spec.name} needs "
                f"a reference at {sr} Hz or more"
            )
        value = F.pesq(inp.reference(sr), inp.signal(sr), sr, self.mode)
        return ItemScore({self.spec.outputs[0].name: value})


class PesqNb(Pesq):
    """Narrow-band PESQ (P.862 + P.862.1 mapping) at 8 kHz."""

    mode = "nb"
    spec = MetricSpec(
        name="pesq_nb",
        version="1",
        outputs=(
            OutputSpec("pesq_nb", higher_is_better=True, valid_range=(0.999, 4.55),
                       unit="MOS-LQO", regression_threshold=0.05, description="ITU-T P.862 narrow-band PESQ mapped by "
                       "P.862.1, MOS-LQO 0.999-4.55"),
        ),
        sample_rate=8000,
        needs_reference=True,
        min_duration=F.MIN_SECONDS,
        max_duration=MAX_SECONDS,
        length_rule=_LENGTH_RULE,
        kind="intrusive",
        description="Perceptual evaluation of speech quality, narrow-band (P.862 + P.862.1)",
        core="speechqe.metrics.functional.pesq",
        source=_SOURCE,
        licence=_LICENCE,
    )
