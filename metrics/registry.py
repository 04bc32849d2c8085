"""Metric registry.

Metric adapters are discovered from the modules of :mod:`speechqe.metrics` (every module but
``base``, ``registry`` and ``functional``), from :data:`EXTRA_MODULES` (metrics that live with
the predictors or vocoders), from the ``speechqe.metrics`` entry-point group (installed
plugins) and from the modules named in ``$SPEECHQE_PLUGINS`` (comma-separated import paths: a
team's own metrics without packaging them).
Adapters import heavy libraries lazily, so discovery is cheap and never needs an extra.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, Mapping

from speechqe.errors import ConfigError

from .base import Metric, MetricSpec, build_params

#: Modules outside this package that define metrics.
EXTRA_MODULES: tuple[str, ...] = ("speechqe.predictors.metrics",)

_SKIP = {"base", "registry", "functional"}


def _metric_classes(module) -> list[type[Metric]]:
    out = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if (
            issubclass(obj, Metric)
            and obj is not Metric
            and obj.__module__ == module.__name__
            and isinstance(getattr(obj, "spec", None), MetricSpec)
        ):
            out.append(obj)
    return out


@lru_cache(maxsize=1)
def _discover() -> dict[str, type[Metric]]:
    import speechqe.metrics as pkg

    modules = [
        f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.name not in _SKIP
    ]
    found: dict[str, type[Metric]] = {}

    def add(cls: type[Metric]) -> None:
        name = cls.spec.name
        if name in found and found[name] is not cls:
            raise RuntimeError(
                f"metric name '{name}' is defined twice: {found[name].__module__} and {cls.__module__}"
            )
        found[name] = cls

    for modname in modules:
        for cls in _metric_classes(importlib.import_module(modname)):
            add(cls)
    for modname in EXTRA_MODULES:
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:  # a missing dependency inside the module is a real error
                raise
            continue
        for cls in _metric_classes(module):
            add(cls)
    for modname in filter(None, (m.strip() for m in os.environ.get("SPEECHQE_PLUGINS", "").split(","))):
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            raise ConfigError(f"cannot import SPEECHQE_PLUGINS module '{modname}': {exc}") from exc
        for cls in _metric_classes(module):
            add(cls)
    for ep in entry_points(group="speechqe.metrics"):
        obj = ep.load()
        classes = [obj] if inspect.isclass(obj) else _metric_classes(obj)
        for cls in classes:
            add(cls)
    return dict(sorted(found.items()))


def refresh() -> None:
    """Forget the discovered metrics (after changing ``$SPEECHQE_PLUGINS``)."""
    _discover.cache_clear()


def available() -> dict[str, type[Metric]]:
    """All registered metric classes by name."""
    return _discover()


def get(name: str) -> type[Metric]:
    metrics = _discover()
    if name not in metrics:
        raise ConfigError(
            f"unknown metric '{name}'. Known metrics: {', '.join(metrics)}. "
            "Run 'speechqe metrics' for their contracts."
        )
    return metrics[name]


def parse_metric_ref(ref: str) -> tuple[str, str | None]:
    """Split ``'name:value'`` (``--metrics mos_ensemble:bundle/``) into name and value."""
    name, _, value = ref.partition(":")
    return name.strip(), (value.strip() or None)


def create(
    ref: str, params: Mapping[str, Any] | None = None, device: str = "cpu"
) -> Metric:
    """Instantiate a metric from ``'name'`` or ``'name:value'`` and a params mapping.

    Raises:
        ConfigError: unknown metric or parameter, or a ``:value`` for a metric without a
            positional parameter.
    """
    name, value = parse_metric_ref(ref)
    cls = get(name)
    values = dict(params or {})
    if value is not None:
        if not cls.positional:
            raise ConfigError(f"metric '{name}' takes no ':value' argument (got '{ref}')")
        values[cls.positional] = value
    return cls(build_params(cls, values), device=device)


def output_specs() -> dict[str, Any]:
    """Every output name -> its :class:`~speechqe.metrics.base.OutputSpec` (for reports)."""
    return {o.name: o for cls in _discover().values() for o in cls.spec.outputs}
