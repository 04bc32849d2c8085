"""Device names: the one resolver every command, metric and trainer uses."""

from __future__ import annotations

import re

from speechqe.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``, ``cuda`` and
    ``cuda:N`` are checked against this machine.

    Raises:
        ConfigError: an unknown name, ``cuda`` without a GPU, or ``cuda:N`` past the devices
            torch sees.
    """
    device = str(device).strip().lower()
    if not _DEVICE.match(device):
        raise ConfigError(f"device must be one of auto, cpu, cuda, cuda:N (got {device!r})")
    if device == "cpu":
        return "cpu"
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda" if n else "cpu"
    if not n:
        raise ConfigError(f"device {device!r} was asked for, but torch sees no CUDA device")
    if ":" in device and int(device.split(":")[1]) >= n:
        raise ConfigError(f"device {device!r} was asked for, but torch sees {n} CUDA device(s) "
                          f"(cuda:0..cuda:{n - 1})")
    return device


def is_device_name(device: str) -> bool:
    """Whether ``device`` is a name :func:`resolve_device` accepts (not whether it exists)."""
    return bool(_DEVICE.match(str(device).strip().lower()))


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")
