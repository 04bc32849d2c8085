"""Helpers for the metric tests: build ScoringInputs from arrays and score them the way the
runner does (contract checks, then score, then each value checked against its OutputSpec)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from speechqe.audio import LoadedAudio
from speechqe.errors import ItemError
from speechqe.manifest import AudioItem
from speechqe.metric import ItemScore, Metric, ScoringInput


def make_input(
    deg: np.ndarray | LoadedAudio,
    sr: int | None = None,
    ref: np.ndarray | LoadedAudio | None = None,
    ref_sr: int | None = None,
    item_id: str = "item",
    text: str | None = None,
) -> ScoringInput:
    audio = deg if isinstance(deg, LoadedAudio) else LoadedAudio.from_array(deg, sr)
    ref_audio = None
    if ref is not None:
        ref_audio = (
            ref if isinstance(ref, LoadedAudio) else LoadedAudio.from_array(ref, ref_sr or sr)
        )
    item = AudioItem(
        id=item_id, path=f"/in-memory/{item_id}.wav", system="test",
        sample_rate=audio.sample_rate, frames=int(audio.samples.size),
        ref_path=None if ref_audio is None else f"/in-memory/{item_id}-ref.wav", text=text,
    )
    return ScoringInput(item=item, audio=audio, ref=ref_audio)


def score(metric: Metric, inp: ScoringInput) -> ItemScore | ItemError:
    """Score one input as the runner does; ItemErrors are returned, not raised."""
    metric.ensure_ready()
    try:
        metric.check_input(inp)
        result = metric.score_item(inp)
    except ItemError as exc:
        return exc
    check(metric, result)
    return result


def check(metric: Metric, result: ItemScore) -> None:
    assert set(result.values) | set(result.errors) == set(metric.spec.output_names)
    assert not set(result.values) & set(result.errors)
    for name, value in result.values.items():
        metric.spec.output(name).check(value)


def value(metric: Metric, inp: ScoringInput, output: str | None = None) -> float:
    res = score(metric, inp)
    if isinstance(res, ItemError):
        raise AssertionError(f"{metric.name} failed: {type(res).__name__}: {res}")
    return res.values[output or metric.spec.outputs[0].name]


@lru_cache(maxsize=64)
def load_clip(path: str) -> LoadedAudio:
    return LoadedAudio.from_file(path)


def clips(root: Path) -> list[Path]:
    return sorted((root / "wavs").glob("*.wav"))
