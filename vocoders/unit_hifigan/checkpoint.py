"""Checkpoints in the public unit HiFi-GAN layout (speech-resynthesis / textlesslib / fairseq).

A checkpoint folder holds:

* ``config.json``: the public generator fields (see
  :meth:`~.config.GeneratorConfig.to_public`) plus, under the key ``"speechqe"``, our own
  metadata (full training config, the unit codebook it was trained on, the F0 quantiser, speaker
  names). Public loaders read fields with ``cfg.get`` and ignore the extra key.
* ``g_00001000``: ``torch.save({"generator": state_dict})`` with weight normalisation stored as
  ``<name>.weight_g`` / ``<name>.weight_v`` (the layout of ``torch.nn.utils.weight_norm``, which
  the public models use) — loadable by textlesslib's ``CodeHiFiGANVocoder``.
* ``do_00001000``: training state (discriminators, optimisers, schedulers, grad scaler, step,
  epoch, RNG states), HiFi-GAN's ``do_`` file with a few more keys.

Everything is read with ``torch.load(weights_only=True)``: no pickled code runs on load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from speechqe.errors import ConfigError

from .config import GeneratorConfig

CONFIG_NAME = "config.json"
_STEP_RE = re.compile(r"^(g|do)_(\d{8})$")
_WN_OURS = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
_WN_PUBLIC = (".weight_g", ".weight_v")


def to_public_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Rename parametrised weight-norm tensors to the public ``weight_g``/``weight_v`` keys."""
    out = {}
    for k, v in sd.items():
        for ours, public in zip(_WN_OURS, _WN_PUBLIC):
            if k.endswith(ours):
                k = k[: -len(ours)] + public
                break
        out[k] = v
    return out


def from_public_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`to_public_state_dict`."""
    out = {}
    for k, v in sd.items():
        for ours, public in zip(_WN_OURS, _WN_PUBLIC):
            if k.endswith(public):
                k = k[: -len(public)] + ours
                break
        out[k] = v
    return out


def _torch_load(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError with long messages
        raise ConfigError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:300]}") from exc


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_config(folder: Path, gen_cfg: GeneratorConfig, meta: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    d = gen_cfg.to_public()
    d["speechqe"] = dict(meta)
    tmp = folder / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(d, indent=2, sort_keys=False))
    os.replace(tmp, folder / CONFIG_NAME)


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"vocoder config not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc


def steps_in(folder: Path, prefix: str = "g") -> list[int]:
    """Steps of the ``g_``/``do_`` files in ``folder``, ascending."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m and m.group(1) == prefix:
            out.append(int(m.group(2)))
    return sorted(out)


def save_checkpoint(
    folder: str | Path,
    step: int,
    generator,
    gen_cfg: GeneratorConfig,
    meta: Mapping[str, Any],
    training_state: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write ``g_<step>`` (+ ``do_<step>``) and ``config.json``; keep the newest ``keep``.

    Returns the path of the generator file.
    """
    folder = Path(folder)
    write_config(folder, gen_cfg, meta)
    g_path = folder / f"g_{step:08d}"
    _atomic_save({"generator": to_public_state_dict(generator.state_dict())}, g_path)
    if training_state is not None:
        _atomic_save(dict(training_state), folder / f"do_{step:08d}")
    if keep:
        for prefix in ("g", "do"):
            for old in steps_in(folder, prefix)[:-keep]:
                (folder / f"{prefix}_{old:08d}").unlink(missing_ok=True)
    return g_path


def resolve_generator_file(path: str | Path) -> tuple[Path, Path]:
    """``(generator file, config.json)`` for a checkpoint file or folder (newest ``g_``).

    Raises:
        ConfigError: no generator file or no ``config.json`` beside it.
    """
    path = Path(path)
    if path.is_dir():
        steps = steps_in(path)
        if not steps:
            raise ConfigError(f"no g_XXXXXXXX generator checkpoint in {path}")
        g = path / f"g_{steps[-1]:08d}"
    elif path.is_file():
        g = path
    else:
        raise ConfigError(f"vocoder checkpoint not found: {path}")
    return g, g.parent / CONFIG_NAME


def checkpoint_id(checkpoint: str | Path, config: str | Path | None = None) -> str:
    """sha256 (first 16 hex) of the generator file's and its config's bytes: names the exact
    vocoder a resynthesis used, without loading it (a folder: its newest ``g_`` file).

    Raises:
        ConfigError: as :func:`resolve_generator_file`.
    """
    from speechqe.hashing import sha256_files

    g_path, default_cfg = resolve_generator_file(checkpoint)
    paths = (g_path, Path(config) if config else default_cfg)
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"vocoder config not found: {path}")
    return sha256_files(paths)[:16]


def load_generator(
    checkpoint: str | Path, config: str | Path | None = None, *, device: str = "cpu",
    for_inference: bool = True,
):
    """Load a unit HiFi-GAN generator from a public-layout checkpoint.

    Args:
        checkpoint: a ``g_XXXXXXXX`` file (any name works, e.g. the public ``g_00500000`` or
            ``checkpoint.pt``) or a folder (its newest ``g_`` file).
        config: the JSON config (default: ``config.json`` beside the checkpoint).
        for_inference: put the model in eval mode and fold weight normalisation.

    Returns:
        ``(model, config_dict)``; ``config_dict["speechqe"]`` holds our metadata when the
        checkpoint was written by speechqe.

    Raises:
        ConfigError: missing files, an unsupported config, or state-dict keys/shapes that do
            not match the config (listed in the message).
    """
    from .model import UnitHiFiGAN

    g_path, default_cfg = resolve_generator_file(checkpoint)
    cfg_dict = read_config(Path(config) if config else default_cfg)
    gen_cfg = GeneratorConfig.from_public(cfg_dict)
    blob = _torch_load(g_path)
    if not isinstance(blob, Mapping) or "generator" not in blob:
        raise ConfigError(f"{g_path}: expected a dict with a 'generator' state dict")
    sd = dict(blob["generator"])
    model = UnitHiFiGAN(gen_cfg)
    if not any(k.endswith(".weight_g") for k in sd):
        # Weight norm already folded (an exported inference checkpoint): load plain weights.
        model.remove_weight_norm()
    else:
        sd = from_public_state_dict(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        raise ConfigError(
            f"{g_path} does not fit its config: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, wrong shapes {wrong[:8]}"
        )
    model.load_state_dict(sd)
    if for_inference:
        model.eval()
        if model.has_weight_norm:
            model.remove_weight_norm()
    return model.to(device), cfg_dict


def load_training_state(folder: str | Path, step: int) -> dict[str, Any]:
    path = Path(folder) / f"do_{step:08d}"
    if not path.is_file():
        raise ConfigError(f"training state {path} not found (cannot resume step {step})")
    return _torch_load(path)
