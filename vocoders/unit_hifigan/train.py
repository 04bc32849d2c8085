"""Training loop of the unit HiFi-GAN: checkpoint/resume, mixed precision, data-loader workers.

HiFi-GAN's recipe (Kong et al. 2020): AdamW (lr 2e-4, betas 0.8/0.99), exponential learning-rate
decay per epoch, discriminator step on LSGAN losses, then generator step on
``45 * mel-L1 + 2 * feature matching + adversarial`` (+ the duration loss when the generator has
a duration predictor). Optionally the discriminators start after ``adv_start_step`` steps on the
mel loss alone (useful for short runs).

Resume is exact: the batches are a function of the step (see :mod:`.data`), and the torch RNG
state (dropout), optimiser, scheduler and grad-scaler states are saved with each checkpoint, so
stopping at step ``k`` and resuming gives the same weights as an uninterrupted run (on CPU,
bit for bit).
"""

from __future__ import annotations

import csv
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from speechqe.errors import ConfigError

from .checkpoint import load_generator, load_training_state, save_checkpoint, steps_in
from .config import VocoderConfig
from .data import SegmentDataset, StepBatchSampler, collate
from .discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from .losses import LogMel, discriminator_loss, feature_loss, generator_loss, mel_l1
from .model import UnitHiFiGAN

LOG_FIELDS = ("step", "seconds", "mel_l1", "loss_g", "loss_d", "loss_fm", "loss_adv", "loss_dur",
              "lr", "steps_per_s")


@dataclass
class TrainResult:
    """Summary of a :func:`train` call (the steps it ran, not earlier resumed ones)."""

    start_step: int
    end_step: int
    seconds: float
    steps_per_s: float
    batch_size: int
    segment_size: int
    device: str
    amp: str
    workers: int
    last: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.end_step - self.start_step, "start_step": self.start_step,
            "end_step": self.end_step, "seconds": round(self.seconds, 2),
            "steps_per_s": round(self.steps_per_s, 4), "batch": self.batch_size,
            "segment_samples": self.segment_size, "device": self.device, "amp": self.amp,
            "workers": self.workers, **{k: round(v, 5) for k, v in self.last.items()},
        }


def autocast_context(device: torch.device, amp: str):
    """Autocast for ``amp`` (``'none'``: a no-op context, i.e. plain float32)."""
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _grad_scaler(device: torch.device, amp: str):
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _trim_log(path: Path, max_step: int) -> None:
    """Drop log rows past ``max_step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= max_step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def train(
    cfg: VocoderConfig,
    dataset: SegmentDataset,
    out_dir: str | Path,
    *,
    steps: int,
    device: str = "cpu",
    meta: Mapping[str, Any] | None = None,
    resume: bool = True,
    log: Callable[[dict[str, float]], None] | None = None,
    validate: Callable[[UnitHiFiGAN, int], Mapping[str, float]] | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train (or resume training) until ``steps`` total steps.

    Args:
        cfg: the full configuration; ``cfg.train.segment_size`` must equal
            ``dataset.seg * hop_size``.
        dataset: segments to train on.
        out_dir: checkpoints (``g_``/``do_``/``config.json``) and ``train_log.csv``.
        steps: total step count to reach (a resumed run continues from its last checkpoint).
        device: ``cpu`` or ``cuda``.
        meta: extra metadata stored in ``config.json`` under ``"speechqe"``.
        resume: continue from the newest ``do_`` checkpoint in ``out_dir`` when there is one.
        log: called with each logged row.
        validate: called at each checkpoint with the generator in eval mode; its numbers are
            stored in ``val_log.jsonl``.
        max_seconds: stop (with a checkpoint) after the first step past this wall time, even
            before ``steps``; a later call resumes from there.

    Returns:
        a :class:`TrainResult` (throughput over the steps run here).
    """
    tc = cfg.train
    gcfg = cfg.generator
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but torch sees no CUDA device")
    if dataset.seg * gcfg.hop_size != tc.segment_size:
        raise ConfigError(
            f"segment_size {tc.segment_size} != dataset segment {dataset.seg} frames x hop "
            f"{gcfg.hop_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tc.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    generator = UnitHiFiGAN(gcfg).to(dev)
    mpd = MultiPeriodDiscriminator(cfg.discriminator).to(dev)
    msd = MultiScaleDiscriminator(cfg.discriminator).to(dev)
    mel_fn = LogMel(cfg.mel, gcfg.sampling_rate).to(dev)
    optim_g = torch.optim.AdamW(generator.parameters(), tc.learning_rate,
                                betas=(tc.adam_b1, tc.adam_b2))
    optim_d = torch.optim.AdamW(list(mpd.parameters()) + list(msd.parameters()),
                                tc.learning_rate, betas=(tc.adam_b1, tc.adam_b2))
    sched_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=tc.lr_decay)
    sched_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=tc.lr_decay)
    scaler = _grad_scaler(dev, tc.amp)
    # HiFi-GAN decays the learning rate once per epoch; an "epoch" here is as many steps as
    # it takes to draw each eligible utterance once on average.
    steps_per_epoch = max(1, math.ceil(dataset.eligible.size / tc.batch_size))
    decay_every = tc.lr_decay_steps or steps_per_epoch

    start = 0
    done = steps_in(out, "do")
    if resume and done:
        start = done[-1]
        g_loaded, _ = load_generator(out / f"g_{start:08d}", device="cpu", for_inference=False)
        generator.load_state_dict(g_loaded.state_dict())
        st = load_training_state(out, start)
        mpd.load_state_dict(st["mpd"])
        msd.load_state_dict(st["msd"])
        optim_g.load_state_dict(st["optim_g"])
        optim_d.load_state_dict(st["optim_d"])
        sched_g.load_state_dict(st["sched_g"])
        sched_d.load_state_dict(st["sched_d"])
        scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["rng_cpu"])
        if dev.type == "cuda" and st.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(st["rng_cuda"])
        _trim_log(out / "train_log.csv", start)
    meta = dict(meta or {})
    meta["vocoder"] = cfg.to_dict()

    def checkpoint(step: int) -> Path:
        state = {
            "mpd": mpd.state_dict(), "msd": msd.state_dict(),
            "optim_g": optim_g.state_dict(), "optim_d": optim_d.state_dict(),
            "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
            "scaler": scaler.state_dict(), "steps": step, "epoch": step // steps_per_epoch,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if dev.type == "cuda" else None,
        }
        path = save_checkpoint(out, step, generator, gcfg, {**meta, "step": step}, state,
                               keep=tc.keep_checkpoints)
        if validate is not None:
            generator.eval()
            with torch.no_grad():
                vals = dict(validate(generator, step))
            generator.train()
            with open(out / "val_log.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **vals}) + "\n")
        return path

    if start >= steps:
        return TrainResult(start, start, 0.0, 0.0, tc.batch_size, tc.segment_size, str(dev),
                           tc.amp, tc.workers, checkpoint=str(out))

    sampler = StepBatchSampler(dataset, tc.batch_size, tc.seed, start, steps)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=tc.workers, collate_fn=collate,
        pin_memory=(dev.type == "cuda"), persistent_workers=False,
        prefetch_factor=(4 if tc.workers else None),
        # Its own generator: drawing the workers' base seed from the global RNG would shift
        # the dropout masks of a resumed run.
        generator=torch.Generator().manual_seed(tc.seed),
    )
    log_path = out / "train_log.csv"
    new_log = not log_path.is_file()
    logf = open(log_path, "a", newline="")
    writer = csv.DictWriter(logf, fieldnames=LOG_FIELDS)
    if new_log:
        writer.writeheader()

    generator.train()
    mpd.train()
    msd.train()
    step = start
    t0 = time.perf_counter()
    t_log, step_log = t0, start
    last: dict[str, float] = {}
    acc: dict[str, float] = {}
    n_acc = 0
    path = Path()
    try:
        for batch in loader:
            b = _to(batch, dev)
            y = b["audio"].unsqueeze(1)
            adv = step >= tc.adv_start_step
            with autocast_context(dev, tc.amp):
                y_hat = generator(b["units"], f0=b.get("f0"), speaker=b.get("speaker"))
                loss_dur = (generator.duration_loss(b["units"])
                            if generator.dur_predictor is not None else None)
            mel_real = mel_fn(y)
            mel_fake = mel_fn(y_hat)

            loss_d = torch.zeros((), device=dev)
            if adv:
                with autocast_context(dev, tc.amp):
                    r1, g1, _, _ = mpd(y, y_hat.detach())
                    r2, g2, _, _ = msd(y, y_hat.detach())
                    loss_d = discriminator_loss(r1, g1) + discriminator_loss(r2, g2)
                optim_d.zero_grad(set_to_none=True)
                scaler.scale(loss_d).backward()
                scaler.step(optim_d)

            loss_mel = mel_l1(mel_real, mel_fake)
            loss_fm = loss_adv = torch.zeros((), device=dev)
            if adv:
                with autocast_context(dev, tc.amp):
                    _, g1, fr1, fg1 = mpd(y, y_hat)
                    _, g2, fr2, fg2 = msd(y, y_hat)
                    loss_fm = feature_loss(fr1, fg1) + feature_loss(fr2, fg2)
                    loss_adv = generator_loss(g1) + generator_loss(g2)
            loss_g = tc.lambda_mel * loss_mel + tc.lambda_fm * loss_fm + tc.lambda_adv * loss_adv
            if loss_dur is not None:
                loss_g = loss_g + tc.lambda_dur * loss_dur
            optim_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(optim_g)
            scaler.update()
            step += 1
            if step % decay_every == 0:
                sched_g.step()
                if adv:  # the discriminators' schedule starts with them
                    sched_d.step()

            vals = {"mel_l1": loss_mel.item(), "loss_g": loss_g.item(), "loss_d": loss_d.item(),
                    "loss_fm": loss_fm.item(), "loss_adv": loss_adv.item(),
                    "loss_dur": loss_dur.item() if loss_dur is not None else float("nan")}
            for k, v in vals.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
            if step % tc.log_every == 0 or step == steps or out_of_time:
                now = time.perf_counter()
                row = {"step": step, "seconds": round(now - t0, 3),
                       **{k: v / n_acc for k, v in acc.items()},
                       "lr": optim_g.param_groups[0]["lr"],
                       "steps_per_s": (step - step_log) / max(now - t_log, 1e-9)}
                writer.writerow(row)
                logf.flush()
                last = {k: float(row[k]) for k in ("mel_l1", "loss_g", "loss_d")}
                if log:
                    log(row)
                acc, n_acc = {}, 0
                t_log, step_log = now, step
            if step % tc.checkpoint_every == 0 or step == steps or out_of_time:
                path = checkpoint(step)
            if out_of_time:
                break
    finally:
        logf.close()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return TrainResult(
        start_step=start, end_step=step, seconds=seconds,
        steps_per_s=(step - start) / max(seconds, 1e-9), batch_size=tc.batch_size,
        segment_size=tc.segment_size, device=str(dev), amp=tc.amp, workers=tc.workers,
        last=last, checkpoint=str(path),
    )
