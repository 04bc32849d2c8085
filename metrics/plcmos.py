"""PLCMOS v2 adapter (ONNX model from ``speechmos``, asset ``plcmos-v2``), made deterministic."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from speechqe import assets
from speechqe.config import Int, StrictModel

from speechqe.metric import (
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    asset_model_id,
)
from .dnsmos import onnx_session
from .functional import plcmos as F

ASSET = "plcmos-v2"


class PlcmosParams(StrictModel):
    """``rounds`` (>= 1) random rater embeddings averaged, drawn from
    ``RandomState(seed)`` (0 <= seed < 2**32, numpy's range)."""

    rounds: Annotated[Int, Field(ge=1)] = F.ROUNDS
    seed: Annotated[Int, Field(ge=0, lt=2**32)] = 0


class Plcmos(Metric):
    """PLCMOS v2 (Diener et al., Interspeech 2023): quality of packet-loss concealment."""

    Params = PlcmosParams
    spec = MetricSpec(
        name="plcmos",
        version="1",
        outputs=(
            OutputSpec("plcmos", higher_is_better=True, valid_range=(0.0, None), unit="MOS",
                       regression_threshold=0.05,
                       description="PLCMOS v2 predicted MOS for packet-loss concealment"),
        ),
        sample_rate=F.SAMPLE_RATE,
        device="cuda",
        min_duration=0.5,
        max_duration=60.0,
        length_rule="whole signal (the model reads the full log spectrogram, ~6.5 MB per "
                    "second of audio); refused above 60 s",
        kind="non-intrusive",
        description="PLCMOS v2, non-intrusive PLC quality (Microsoft PLC Challenge)",
        core="speechqe.metrics.functional.plcmos",
        source="microsoft/PLC-Challenge PLCMOS v2 ONNX via speechmos; pipeline reproduced with "
               "seeded rater embeddings",
        licence="MIT (microsoft/PLC-Challenge; speechmos)",
        extra="models",
    )

    def model_id(self) -> str:
        return asset_model_id(self.params, ASSET)

    def setup(self) -> None:
        root = assets.get(ASSET).path()
        self._session = onnx_session(root / "plcmos_v2.onnx", "PLCMOS", self.device)

    def score_item(self, inp: ScoringInput) -> ItemScore:
        self.ensure_ready()
        p = self.params
        return ItemScore({"plcmos": F.plcmos(inp.signal(F.SAMPLE_RATE), self._session,
                                             rounds=p.rounds, seed=p.seed)})
