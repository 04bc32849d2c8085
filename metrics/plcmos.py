"""PLCMOS v2 adapter (ONNX model from ``speechmos``, asset ``plcmos-v2``), made deterministic."""

from __future__ import annotations

from dataclasses import dataclass

from speechqe import assets

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


@dataclass(frozen=True)
class PlcmosParams:
    """``rounds`` random rater embeddings averaged, drawn from ``RandomState(seed)``."""

    rounds: int = F.ROUNDS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")


class Plcmos(Metric):
    """PLCMOS v2 (Diener et al., Interspeech 2023): quality of packet-loss concealment."""

    Params = PlcmosParams
    spec = MetricSpec(
        name="plcmos",
        version="1",
        outputs=(
            OutputSpec("plcmos", higher_is_better=True, valid_range=(0.0, None), unit="MOS",
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
