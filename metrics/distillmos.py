"""DistillMOS adapter: ``distillmos.ConvTransformerSQAModel`` with the verified ``distillmos-v7``
weights (sha256 checked, loaded with ``weights_only=True``)."""

from __future__ import annotations

from speechqe import assets

from speechqe.metric import (
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    asset_model_id,
)
from .functional import distillmos as F
from .functional.deps import require

ASSET = "distillmos-v7"


def load_model(path, device: str = "cpu"):
    """Build the DistillMOS architecture without its own weight loading and load the state
    dict at ``path`` (a ``{'model': state_dict, ...}`` checkpoint or a bare state dict)."""
    torch = require("torch", "models", "DistillMOS")
    distillmos = require("distillmos", "models", "DistillMOS")
    model = distillmos.ConvTransformerSQAModel(load_weights=False)
    chkpt = torch.load(str(path), map_location="cpu", weights_only=True)
    state = chkpt["model"] if isinstance(chkpt, dict) and "model" in chkpt else chkpt
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


class DistillMos(Metric):
    """DistillMOS (Stahl & Gamper, ICASSP 2025): predicted MOS 1..5 at 16 kHz, one clip per
    forward pass (the model's crops of a clip share its batch dimension)."""

    spec = MetricSpec(
        name="distillmos",
        version="1",
        outputs=(
            OutputSpec("distillmos", higher_is_better=True, valid_range=(1.0, 5.0), unit="MOS",
                       regression_threshold=0.05,
                       description="DistillMOS predicted MOS"),
        ),
        sample_rate=16000,
        device="cuda",
        batched=False,
        min_duration=0.5,
        max_duration=30.0,
        length_rule="7.68 s crops every <= 1 s (the library's rule), all crops in one forward "
                    "pass (~50 MB per second of audio); refused above 30 s",
        kind="non-intrusive",
        description="DistillMOS: XLS-R speech quality model distilled into a CNN-Transformer",
        core="speechqe.metrics.functional.distillmos",
        source="microsoft/Distill-MOS (distillmos package), variant 7 weights",
        licence="MIT (microsoft/Distill-MOS)",
        extra="models",
    )

    def model_id(self) -> str:
        return asset_model_id(self.params, ASSET)

    def setup(self) -> None:
        path = assets.get(ASSET).file("distill_mos_v7.pt")  # verifies the sha256
        self._model = load_model(path, self.device)

    def score_item(self, inp: ScoringInput) -> ItemScore:
        self.ensure_ready()
        return ItemScore({"distillmos": F.distillmos(self._model, inp.signal(16000))})

    def close(self) -> None:
        self._model = None
        self._ready = False
