"""Training-step throughput of the strong MOS learner (UTMOS strong: SSL + BLSTM head).

Runs the real training loop (``speechqe.predictors.ssl_strong.train.train_strong``: batch
collation, optional augmentation, forward, UTMOS loss, backward, clipping, Adam step) on
random-weight models and synthetic audio, and prints one JSON line::

    python bench/bench_strong_learner.py                       # wav2vec2 base, 12 x 10 s, bf16 on CUDA
    python bench/bench_strong_learner.py --arch wavlm_base --compare-fp32
    python bench/bench_strong_learner.py --tiny --device cpu   # seconds, for CI machines

Needs only torch, torchaudio and numpy (no weights, no data): run from a checkout; the
speechqe namespace is assembled from the source folders when the package is not installed.
``--compare-fp32`` times float32 in the same process and reports the bf16 speed-up ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_speechqe() -> None:
    """Make ``speechqe.predictors`` importable from a plain checkout (the installed package
    maps the top-level folders into one namespace; without installation we do it here)."""
    try:
        import speechqe.predictors.ssl_strong.train  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    # Another speechqe (an older install) may be half-imported: use this checkout's.
    for name in [m for m in sys.modules if m == "speechqe" or m.startswith("speechqe.")]:
        del sys.modules[name]
    sys.path.insert(0, str(ROOT))
    import speechqe

    for sub in ("predictors", "metrics", "data"):
        name = f"speechqe.{sub}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            name, ROOT / sub / "__init__.py", submodule_search_locations=[str(ROOT / sub)]
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        setattr(speechqe, sub, mod)


def run(args, amp: str) -> dict:
    import numpy as np
    import torch

    from speechqe.encoders.ssl import TINY_ARCH, build_random
    from speechqe.manifest import AudioItem
    from speechqe.predictors.ssl_strong.model import StrongLearner, StrongModelConfig
    from speechqe.predictors.ssl_strong.train import StrongTrainConfig, train_strong

    device = torch.device(args.device)
    arch = dict(TINY_ARCH) if args.tiny else {"factory": args.arch}
    ssl = build_random(arch, seed=0)
    head = (StrongModelConfig(domain_dim=8, listener_dim=8, blstm_hidden=16, proj_hidden=32)
            if args.tiny else StrongModelConfig())
    model = StrongLearner(ssl, head, n_domains=1, n_listeners=0)
    n = args.batch * 2
    rng = np.random.default_rng(0)
    samples = int(args.seconds * 16000)
    signals = [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(n)]
    items = [AudioItem(id=f"u{i}", path="", system="s", sha256=f"h{i}", mos=1.0 + 4.0 * i / (n - 1))
             for i in range(n)]
    cfg = StrongTrainConfig(
        steps=args.warmup + args.steps, batch_size=args.batch, accumulate=1, lr=2e-5,
        warmup_steps=1, max_seconds=args.seconds, augment=args.augment, use_listeners=False,
        amp=amp, checkpoint_every=0,
    )
    stamps: list[float] = []

    def tick(step: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_strong(model, items, lambda i: signals[i], cfg, domains=["default"], listeners=[],
                 device=args.device, progress=tick)
    timed = stamps[args.warmup - 1 :] if args.warmup > 0 else stamps
    dt = (timed[-1] - timed[0]) / max(1, len(timed) - 1)
    out = {
        "amp": amp,
        "step_s": round(dt, 4),
        "clips_per_s": round(args.batch / dt, 2),
        "audio_s_per_s": round(args.batch * args.seconds / dt, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wav2vec2_base", choices=["wav2vec2_base", "wavlm_base", "hubert_base"])
    p.add_argument("--tiny", action="store_true", help="tiny SSL and head (CPU smoke run)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch", type=int, default=12, help="clips per step (UTMOS22: 12)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (UTMOS22 crops to 10 s)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"])
    p.add_argument("--augment", action="store_true", help="include speed/pitch augmentation (CPU work)")
    p.add_argument("--compare-fp32", action="store_true", help="also time float32, same process")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _import_speechqe()
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny and args.device == "cpu":
        args.batch, args.seconds, args.steps, args.warmup = min(args.batch, 4), min(args.seconds, 2.0), min(args.steps, 3), 1
    amp = args.amp if args.device == "cuda" else "none"
    result = {
        "bench": "strong_learner_train_step",
        "arch": "tiny" if args.tiny else args.arch,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "batch": args.batch, "seconds": args.seconds, "augment": args.augment,
        "torch": torch.__version__,
        **run(args, amp),
    }
    if args.compare_fp32 and amp != "none":
        ref = run(args, "none")
        result["fp32_step_s"] = ref["step_s"]
        result["speedup_vs_fp32"] = round(ref["step_s"] / result["step_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
