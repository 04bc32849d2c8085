"""Training data for the unit HiFi-GAN: random fixed-length segments of (units, audio, F0,
speaker), drawn by a step-indexed sampler.

The batch of step ``s`` is a pure function of ``(seed, s)``: which utterances and which segment
starts are drawn does not depend on the number of data-loader workers, on earlier epochs or on
whether training was resumed, so a resumed run sees exactly the batches an uninterrupted run
would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from speechqe.errors import ConfigError


@dataclass(frozen=True)
class Utterance:
    """One training utterance.

    Attributes:
        id: item id.
        audio_path: the waveform (any rate; resampled to the vocoder's rate on load).
        units: ``(frames,)`` int unit ids at the vocoder's frame rate (not deduplicated).
        f0: ``(frames,)`` F0 bins (int) or values (float), when the vocoder uses F0.
        speaker: speaker index (id table) or ``(dim,)`` float vector, when it uses a speaker.
    """

    id: str
    audio_path: str
    units: np.ndarray
    f0: np.ndarray | None = None
    speaker: int | np.ndarray | None = None


class SegmentDataset(Dataset):
    """Indexed by ``(utterance index, start frame)``; returns one segment as tensors.

    Audio is decoded with :func:`speechqe.audio.read`, resampled once to ``sample_rate`` and kept
    in memory (``preload`` decodes everything up front, so forked workers share it).
    """

    def __init__(self, utterances: Sequence[Utterance], *, sample_rate: int, hop_size: int,
                 segment_frames: int, preload: bool = True):
        if not utterances:
            raise ConfigError("no training utterances")
        self.utts = list(utterances)
        self.sample_rate = sample_rate
        self.hop = hop_size
        self.seg = segment_frames
        self._audio: dict[int, np.ndarray] = {}
        if preload:
            for i in range(len(self.utts)):
                self._load(i)
        # Frames usable per utterance: the units, capped by the audio (known after loading, or
        # assumed equal to the units until then).
        self.frames = np.array([self._usable(i) for i in range(len(self.utts))], dtype=np.int64)
        self.eligible = np.flatnonzero(self.frames >= self.seg)
        if self.eligible.size == 0:
            raise ConfigError(
                f"no utterance has {self.seg} frames ({self.seg * hop_size / sample_rate:.2f} s); "
                "use a shorter segment"
            )

    def _load(self, i: int) -> np.ndarray:
        a = self._audio.get(i)
        if a is None:
            from speechqe.audio import read, resample

            x, sr = read(self.utts[i].audio_path)
            a = resample(x, sr, self.sample_rate)
            self._audio[i] = a
        return a

    def _usable(self, i: int) -> int:
        n = len(self.utts[i].units)
        if i in self._audio:
            # The encoder may emit one frame more than the audio covers; audio short of the
            # last frame by less than one hop is zero-padded.
            n = min(n, -(-len(self._audio[i]) // self.hop))
        return n

    @property
    def skipped(self) -> int:
        """Utterances shorter than one segment (never sampled)."""
        return len(self.utts) - int(self.eligible.size)

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, start = key
        u = self.utts[i]
        a = self._load(i)
        s0, s1 = start * self.hop, (start + self.seg) * self.hop
        audio = a[s0:s1]
        if audio.size < s1 - s0:
            audio = np.pad(audio, (0, s1 - s0 - audio.size))
        out = {
            "units": torch.from_numpy(np.asarray(u.units[start:start + self.seg], dtype=np.int64)),
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
        }
        if u.f0 is not None:
            f = np.asarray(u.f0[start:start + self.seg])
            out["f0"] = torch.from_numpy(f.astype(np.int64 if f.dtype.kind in "iu" else np.float32))
        if u.speaker is not None:
            out["speaker"] = (torch.tensor(u.speaker, dtype=torch.long) if np.isscalar(u.speaker)
                              else torch.from_numpy(np.asarray(u.speaker, dtype=np.float32)))
        return out


def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack equal-length segments."""
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


class StepBatchSampler(Sampler):
    """Yields, for steps ``start_step, start_step + 1, ...``, a list of ``batch_size``
    ``(utterance, start frame)`` keys drawn from a generator seeded by ``(seed, step)``.

    Utterances are drawn uniformly with replacement among those at least one segment long;
    starts uniformly within each utterance.
    """

    def __init__(self, dataset: SegmentDataset, batch_size: int, seed: int, start_step: int,
                 end_step: int):
        self.ds = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.end_step = end_step

    def batch_for(self, step: int) -> list[tuple[int, int]]:
        g = np.random.default_rng([self.seed, step])
        idx = self.ds.eligible[g.integers(0, self.ds.eligible.size, size=self.batch_size)]
        starts = g.integers(0, self.ds.frames[idx] - self.ds.seg + 1)
        return [(int(i), int(s)) for i, s in zip(idx, starts)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch_for(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)
