"""STOI and ESTOI adapters (``pystoi``).

By default both signals go to pystoi at their input rate (the reference's native rate; the
signal is brought to it by the runner's resampler when the two differ), so pystoi does its own
resampling to 10 kHz and the value equals ``pystoi.stoi(ref, deg, fs)`` on the files: the number
users compare with. ``resample='runner'`` is the opt-in faster path: the runner's torchaudio
resampler brings both signals to 10 kHz once and pystoi skips its own resampling; it differs
from pystoi's own path by up to ~2e-3 (STOI) and ~5e-3 (ESTOI) (see ``docs/metrics.md``).
"""

from __future__ import annotations

import importlib.util
from typing import Literal, get_args

from speechqe.config import StrictModel
from speechqe.errors import MissingDependencyError
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

#: Longest input (seconds) scored: pystoi transforms the whole signal at once, ~2.5 MB (STOI)
#: and ~3 MB (ESTOI) of memory per second of 16 kHz input (``bench/bench_lengths.py``).
MAX_SECONDS = 600.0
_LENGTH_RULE = ("whole signal (pystoi's STFT of the full pair, ~3 MB per second of audio); "
                f"refused above {MAX_SECONDS:g} s")


class StoiParams(StrictModel):
    """Parameters of ``stoi`` and ``estoi``.

    Attributes:
        max_length_diff_s: largest reference/signal length difference (seconds) trimmed from
            the end; a larger one is a ``length_mismatch`` error.
        resample: ``'pystoi'`` (default: signals at their input rate, pystoi resamples to
            10 kHz itself; equals ``pystoi.stoi(ref, deg, fs)``) or ``'runner'`` (opt-in,
            faster: the runner resamples both to 10 kHz with torchaudio; differs from pystoi's
            own resampling by up to ~2e-3 STOI / ~5e-3 ESTOI).
    """

    max_length_diff_s: MaxLengthDiff = MAX_LENGTH_DIFF_S
    resample: Literal["pystoi", "runner"] = "pystoi"


#: How the signals reach pystoi's 10 kHz (see the module docstring).
RESAMPLERS = get_args(StoiParams.model_fields["resample"].annotation)


class Stoi(Metric):
    """Short-time objective intelligibility (Taal et al. 2011)."""

    extended = False
    Params = StoiParams
    spec = MetricSpec(
        name="stoi",
        version="2",  # 2: pystoi resamples (input rate) by default; 1 fed it 10 kHz
        outputs=(
            OutputSpec("stoi", higher_is_better=True, valid_range=(-1.0, 1.0), regression_threshold=0.01,
                       description="STOI, mean short-time envelope correlation (mostly 0-1)"),
        ),
        sample_rate=None,
        needs_reference=True,
        min_duration=0.4,
        max_duration=MAX_SECONDS,
        length_rule=_LENGTH_RULE,
        kind="intrusive",
        description="Short-time objective intelligibility (Taal et al., IEEE TASLP 2011)",
        core="speechqe.metrics.functional.stoi",
        source="pystoi (mpariente/pystoi), a port of Taal's MATLAB reference",
        licence="MIT (pystoi)",
    )

    def model_id(self) -> str:
        return f"{params_id(self.params)}/pystoi-{lib_version('pystoi')}"

    def setup(self) -> None:
        # pystoi imports scipy.signal (a second or more): check here that it is installed and
        # import it when the first item is scored, so that a run with nothing to score (a
        # warm rerun) does not pay for it.
        if importlib.util.find_spec("pystoi") is None:
            raise MissingDependencyError("pystoi", "all", "STOI/ESTOI")

    def score_item(self, inp: ScoringInput) -> ItemScore:
        if self.params.resample == "runner":
            sr = F.STOI_RATE
            ref = inp.reference(sr)
        else:
            ref = inp.reference(None)
            sr = inp.ref.sample_rate  # type: ignore[union-attr]  (reference() checked it)
        ref, deg = match_lengths(ref, inp.signal(sr), sr, self.params.max_length_diff_s)
        return ItemScore({self.spec.outputs[0].name: F.stoi(ref, deg, sr, self.extended)},
                         extra={"sample_rate": sr})


class Estoi(Stoi):
    """Extended STOI (Jensen & Taal 2016), robust to modulated maskers."""

    extended = True
    spec = MetricSpec(
        name="estoi",
        version="2",  # 2: pystoi resamples (input rate) by default; 1 fed it 10 kHz
        outputs=(
            OutputSpec("estoi", higher_is_better=True, valid_range=(-1.0, 1.0), regression_threshold=0.01,
                       description="Extended STOI (mostly 0-1)"),
        ),
        sample_rate=None,
        needs_reference=True,
        min_duration=0.4,
        max_duration=MAX_SECONDS,
        length_rule=_LENGTH_RULE,
        kind="intrusive",
        description="Extended short-time objective intelligibility (Jensen & Taal, TASLP 2016)",
        core="speechqe.metrics.functional.stoi",
        source="pystoi (mpariente/pystoi), extended=True",
        licence="MIT (pystoi)",
    )
