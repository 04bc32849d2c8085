"""Batched inference with a unit HiFi-GAN.

Sequences are sorted by length, batched with right padding and masks (which keep every item's
samples equal to single-item inference, see :mod:`.model`), trimmed to
``frames * hop_size`` samples each, and returned in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechqe.errors import ConfigError

from .checkpoint import checkpoint_id, load_generator
from .model import UnitHiFiGAN


@dataclass
class UnitVocoder:
    """A loaded generator plus its config and metadata.

    Attributes:
        model: the generator in eval mode.
        config: the JSON config as read (``config["speechqe"]``: our metadata, if any).
        device: where it runs.
        checkpoint_id: :func:`.checkpoint_id` of the files it was loaded from (``""`` when
            built in memory).
    """

    model: UnitHiFiGAN
    config: dict[str, Any]
    device: str = "cpu"
    checkpoint_id: str = ""

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, config: str | Path | None = None, *,
                        device: str = "cpu") -> "UnitVocoder":
        """Load a public-layout checkpoint (file or folder; see :func:`.load_generator`)."""
        model, cfg = load_generator(checkpoint, config, device=device, for_inference=True)
        return cls(model=model, config=cfg, device=device,
                   checkpoint_id=checkpoint_id(checkpoint, config))

    @property
    def sample_rate(self) -> int:
        return self.model.cfg.sampling_rate

    @property
    def hop_size(self) -> int:
        return self.model.cfg.hop_size

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.config.get("speechqe") or {})

    @torch.no_grad()
    def synthesize(
        self,
        units: Sequence[np.ndarray],
        *,
        durations: Sequence[np.ndarray] | None = None,
        predict_durations: bool = False,
        f0: Sequence[np.ndarray] | None = None,
        speakers: Sequence[Any] | None = None,
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """Synthesise each unit sequence.

        Args:
            units: ``(n,)`` int arrays: frame-level units, or deduplicated units when
                ``durations`` are given or ``predict_durations``.
            durations: frames per deduplicated unit (same shapes as ``units``).
            predict_durations: deduplicated ``units`` are expanded by the model's duration
                predictor.
            f0: per sequence, frame-level F0 bins/values (after expansion), if the model uses F0.
            speakers: per sequence, an id or a vector, if the model uses a speaker.
            batch_size: sequences per forward pass.

        Returns:
            float32 waveforms at :attr:`sample_rate`, ``frames * hop_size`` samples each.

        Raises:
            ConfigError: a unit id outside the vocabulary, an empty sequence, or inputs the
                model needs that are missing.
        """
        cfg = self.model.cfg
        n = len(units)
        if durations is not None and len(durations) != n:
            raise ConfigError("durations and units differ in number")
        if predict_durations and self.model.dur_predictor is None:
            raise ConfigError("this vocoder has no duration predictor; pass durations or "
                              "frame-level (not deduplicated) units")
        if cfg.f0 and f0 is None:
            raise ConfigError("this vocoder is conditioned on F0: pass f0")
        if cfg.multispkr and speakers is None:
            raise ConfigError("this vocoder is conditioned on a speaker: pass speakers")
        arrs = [np.asarray(u, dtype=np.int64).reshape(-1) for u in units]
        for i, a in enumerate(arrs):
            if a.size == 0:
                raise ConfigError(f"unit sequence {i} is empty")
            if a.min() < 0 or a.max() >= cfg.num_embeddings:
                raise ConfigError(
                    f"unit sequence {i} has ids outside [0, {cfg.num_embeddings}): "
                    f"[{a.min()}, {a.max()}]"
                )
        dev = torch.device(self.device)
        order = sorted(range(n), key=lambda i: len(arrs[i]))
        out: list[np.ndarray | None] = [None] * n
        for k in range(0, n, batch_size):
            idx = order[k:k + batch_size]
            lens = torch.tensor([len(arrs[i]) for i in idx], dtype=torch.long)
            T = int(lens.max())
            u = torch.zeros(len(idx), T, dtype=torch.long)
            for j, i in enumerate(idx):
                u[j, : lens[j]] = torch.from_numpy(arrs[i])
            u, lens = u.to(dev), lens.to(dev)
            dur = None
            if durations is not None:
                dur = torch.zeros(len(idx), T, dtype=torch.long)
                for j, i in enumerate(idx):
                    d = np.asarray(durations[i], dtype=np.int64).reshape(-1)
                    if d.shape != arrs[i].shape or (d < 1).any():
                        raise ConfigError(f"durations of sequence {i} must be >= 1, one per unit")
                    dur[j, : lens[j]] = torch.from_numpy(d)
                dur = dur.to(dev)
            elif predict_durations:
                dur = self.model.predict_durations(u, lens)
            frame_lens = lens if dur is None else dur.sum(1)
            Tf = int(frame_lens.max())
            f = None
            if cfg.f0:
                quant = cfg.f0_quant_num_bin > 0
                f = torch.zeros(len(idx), Tf, dtype=torch.long if quant else torch.float32)
                for j, i in enumerate(idx):
                    fi = torch.as_tensor(np.asarray(f0[i]).reshape(-1)[: int(frame_lens[j])])
                    if fi.numel() != int(frame_lens[j]):
                        raise ConfigError(f"f0 of sequence {i} is shorter than its frames")
                    f[j, : fi.numel()] = fi.to(f.dtype)
                f = f.to(dev)
            spk = None
            if cfg.multispkr:
                if cfg.speaker_embedding_dim:
                    spk = torch.stack([torch.as_tensor(np.asarray(speakers[i], np.float32))
                                       for i in idx]).to(dev)
                else:
                    spk = torch.tensor([int(speakers[i]) for i in idx], dtype=torch.long,
                                       device=dev)
            wav = self.model(u, lens, f0=f, speaker=spk, durations=dur)
            n_samples = self.model.output_lengths(frame_lens)
            for j, i in enumerate(idx):
                out[i] = wav[j, 0, : int(n_samples[j])].float().cpu().numpy()
        return out  # type: ignore[return-value]
