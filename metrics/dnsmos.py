"""DNSMOS adapter: P.835 SIG/BAK/OVRL and P.808 MOS from the ONNX models that ship in
``speechmos`` (asset ``dnsmos-p835``, sha256-verified before use), batched over items."""

from __future__ import annotations

import os
import warnings
from typing import Sequence

from speechqe import assets
from speechqe.errors import ItemError, UnexpectedItemError
from speechqe.streaming import StreamedAudio

from speechqe.metric import (
    ItemResult,
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    asset_model_id,
)
from .functional import dnsmos as F
from .functional.deps import require

ASSET = "dnsmos-p835"


def onnx_session(path, what: str, device: str = "cpu"):
    """An ONNX Runtime session on ``device``.

    ``'cuda'`` uses the CUDA execution provider when the installed onnxruntime has it
    (``onnxruntime-gpu``) and otherwise falls back to the CPU with a warning. On the CPU the
    intra-op threads follow ``OMP_NUM_THREADS`` when it is set (the project's one thread knob),
    else ONNX Runtime's default (the physical cores). ONNX Runtime's CPU memory arena is kept:
    it holds the largest activations a session needed (~0.2 GB for DNSMOS's 9 s segments) for
    the life of the process, a bounded cost, while turning it off made DNSMOS ~20 % slower
    (fresh pages for every call: 0.6 s more system time per 8 segments on 3.5 s of compute).
    """
    ort = require("onnxruntime", "models", what)
    so = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = device.partition(":")[2] or "0"
            providers = [("CUDAExecutionProvider", {"device_id": int(index)}), *providers]
        else:
            warnings.warn(f"{what}: this onnxruntime has no CUDA provider (install "
                          "onnxruntime-gpu); running on the CPU", RuntimeWarning, stacklevel=2)
    return ort.InferenceSession(str(path), so, providers=providers)


def uses_cuda(session) -> bool:
    return session.get_providers()[0] == "CUDAExecutionProvider"


def _mos(name: str, what: str, high: float | None) -> OutputSpec:
    return OutputSpec(name, higher_is_better=True, valid_range=(0.0, high), unit="MOS",
                      regression_threshold=0.05, description=what)


class Dnsmos(Metric):
    """DNSMOS P.835 and P.808 (Reddy et al., ICASSP 2021/2022), non-intrusive, 16 kHz.

    ``max_batch`` (segments per ONNX call) is a run-time setting, not a parameter: batching
    never changes a score (tested), so it is not part of the stored key. ``None`` picks
    :data:`GPU_BATCH` on the CUDA provider and 1 on the CPU, where batching gave no speed-up
    (see ``bench/bench_metrics.py``).
    """

    GPU_BATCH = 16
    max_batch: int | None = None
    spec = MetricSpec(
        name="dnsmos",
        version="1",
        outputs=(
            # The P.835 mapping polynomials peak at 4.44 (SIG), 4.52 (BAK) and 4.64 (OVRL)
            # whatever the network outputs, so 5 bounds them; below, nothing bounds a
            # polynomial or the P.808 network, and a MOS under 0 can only be a fault.
            _mos("dnsmos_sig", "DNSMOS P.835 speech signal quality (SIG)", 5.0),
            _mos("dnsmos_bak", "DNSMOS P.835 background noise quality (BAK)", 5.0),
            _mos("dnsmos_ovrl", "DNSMOS P.835 overall quality (OVRL)", 5.0),
            _mos("dnsmos_p808", "DNSMOS P.808 overall MOS", None),
        ),
        sample_rate=F.SAMPLE_RATE,
        device="cuda",
        batched=True,
        min_duration=0.5,
        max_duration=None,
        length_rule="any length: 9.01 s windows every 1 s (clips under 9.01 s repeated), "
                    "mean over windows, as the original; a long file is read a group of "
                    "windows at a time (memory independent of its length)",
        kind="non-intrusive",
        description="DNSMOS P.835 (SIG, BAK, OVRL) and P.808, Microsoft DNS Challenge models",
        core="speechqe.metrics.functional.dnsmos",
        source="microsoft/DNS-Challenge DNSMOS ONNX models via speechmos; dnsmos_local.py "
               "pipeline reproduced (equal to speechmos.dnsmos.run)",
        licence="MIT (models: microsoft/DNS-Challenge; speechmos)",
        extra="models",
    )

    def model_id(self) -> str:
        return asset_model_id(self.params, ASSET)

    def setup(self) -> None:
        require("librosa", "models", "DNSMOS")
        root = assets.get(ASSET).path()  # verifies the sha256 of both files
        self._primary = onnx_session(root / "sig_bak_ovr.onnx", "DNSMOS", self.device)
        self._p808 = onnx_session(root / "model_v8.onnx", "DNSMOS", self.device)

    def _batch_size(self) -> int:
        if self.max_batch is not None:
            return self.max_batch
        return self.GPU_BATCH if uses_cuda(self._primary) else 1

    def _scores(self, signals) -> list[ItemScore]:
        return [
            ItemScore({"dnsmos_sig": s.sig, "dnsmos_bak": s.bak, "dnsmos_ovrl": s.ovrl,
                       "dnsmos_p808": s.p808}, extra={"segments": s.segments})
            for s in F.dnsmos(signals, self._primary, self._p808, max_batch=self._batch_size())
        ]

    def score_item(self, inp: ScoringInput) -> ItemScore:
        self.ensure_ready()
        if isinstance(inp.audio, StreamedAudio):
            return self._streamed(inp.audio)
        return self._scores([inp.signal(F.SAMPLE_RATE)])[0]

    def _streamed(self, audio: StreamedAudio) -> ItemScore:
        """A long input read window by window (see :func:`F.dnsmos_windows`)."""
        n = audio.length_at(F.SAMPLE_RATE)
        if n < F.SEGMENT_SAMPLES:  # never streamed in practice: too short to need it
            return self._scores([audio.read(0, n, F.SAMPLE_RATE)])[0]
        s = F.dnsmos_windows(lambda a, b: audio.read(a, b, F.SAMPLE_RATE), n, self._primary,
                             self._p808, max_batch=self._batch_size())
        return ItemScore({"dnsmos_sig": s.sig, "dnsmos_bak": s.bak, "dnsmos_ovrl": s.ovrl,
                          "dnsmos_p808": s.p808}, extra={"segments": s.segments})

    def score_batch(self, inputs: Sequence[ScoringInput]) -> list[ItemResult]:
        self.ensure_ready()
        out: list[ItemResult | None] = [None] * len(inputs)
        ready: list[int] = []
        signals = []
        for k, inp in enumerate(inputs):
            try:
                if isinstance(getattr(inp, "audio", None), StreamedAudio):  # long: window by window
                    out[k] = self.score_item(inp)
                    continue
                signals.append(inp.signal(F.SAMPLE_RATE))
                ready.append(k)
            except ItemError as exc:
                out[k] = exc
        try:
            for k, score in zip(ready, self._scores(signals)):
                out[k] = score
        except Exception:
            # One call failed: score the items one by one so that a bad one cannot take the
            # others down; its own exception is kept (wrapped, type name first).
            for k, x in zip(ready, signals):
                try:
                    out[k] = self._scores([x])[0]
                except ItemError as exc:
                    out[k] = exc
                except Exception as exc:  # noqa: BLE001 - recorded per item, never swallowed
                    out[k] = UnexpectedItemError(f"{type(exc).__name__}: {exc}")
        return out  # type: ignore[return-value]
