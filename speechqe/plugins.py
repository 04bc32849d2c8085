"""The metric plugin registry (core, layer L0).

Every metric is a plugin. speechqe's own metrics (``speechqe.metrics.*``, the MOS metrics in
``speechqe.predictors.metrics``) are registered in ``pyproject.toml`` under the
``speechqe.metrics`` entry-point group exactly as a third-party package registers its own, so
this module names no domain package: the layers stay one-way (see ``docs/architecture.md``).
A team's metrics that are not packaged can be named in ``$SPEECHQE_PLUGINS`` (comma-separated
module paths).

An entry point names a module (every :class:`~speechqe.metric.Metric` subclass defined in it
is registered) or one class. Adapters import their heavy libraries lazily, so discovery is
cheap and never needs an extra. A plugin that cannot be imported is never skipped silently: it
is kept in :func:`broken` with its error, ``speechqe metrics`` lists it and exits non-zero, and
asking for one of its metrics says why it is unavailable.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, Mapping, Sequence

from speechqe.errors import ConfigError
from speechqe.metric import Metric, MetricSpec, build_params, canonical_values

#: The entry-point group metrics are registered under.
ENTRY_POINT_GROUP = "speechqe.metrics"
#: Environment variable naming extra plugin modules (comma-separated import paths).
PLUGINS_ENV = "SPEECHQE_PLUGINS"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded: where it was declared and why it failed."""

    source: str
    error: str


@dataclass
class _Registry:
    metrics: dict[str, type[Metric]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)


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
def _discover() -> _Registry:
    reg = _Registry()

    def add(cls: type[Metric], source: str) -> None:
        name = cls.spec.name
        if name in reg.metrics and reg.metrics[name] is not cls:
            raise ConfigError(
                f"metric name '{name}' is defined twice: {reg.metrics[name].__module__} "
                f"({reg.origin[name]}) and {cls.__module__} ({source})"
            )
        reg.metrics[name] = cls
        reg.origin[name] = source

    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    if not any(ep.value.startswith("speechqe.") for ep in eps):
        raise ConfigError(
            "speechqe's built-in metrics are not registered: they come through the "
            f"'{ENTRY_POINT_GROUP}' entry points, which exist once the package is installed "
            "(pip install -e . from the checkout, or 'make venv')"
        )
    for ep in sorted(eps, key=lambda e: e.name):
        source = f"entry point {ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - recorded and shown, never skipped silently
            reg.broken.append(BrokenPlugin(source, f"{type(exc).__name__}: {exc}"))
            continue
        for cls in [obj] if inspect.isclass(obj) else _metric_classes(obj):
            add(cls, source)
    for modname in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            raise ConfigError(f"cannot import {PLUGINS_ENV} module '{modname}': {exc}") from exc
        for cls in _metric_classes(module):
            add(cls, f"{PLUGINS_ENV} {modname}")
    reg.metrics = dict(sorted(reg.metrics.items()))
    return reg


def refresh() -> None:
    """Forget the discovered metrics (after changing ``$SPEECHQE_PLUGINS``)."""
    _discover.cache_clear()


def available() -> dict[str, type[Metric]]:
    """All registered metric classes by name."""
    return _discover().metrics


def broken() -> list[BrokenPlugin]:
    """Plugins that failed to load, with the reason."""
    return list(_discover().broken)


def origin(name: str) -> str:
    """Where metric ``name`` was registered (entry point or ``$SPEECHQE_PLUGINS`` module)."""
    get(name)
    return _discover().origin[name]


def get(name: str) -> type[Metric]:
    reg = _discover()
    if name not in reg.metrics:
        hint = ""
        if reg.broken:
            hint = " Plugins that failed to load: " + "; ".join(
                f"{b.source} ({b.error})" for b in reg.broken
            ) + "."
        raise ConfigError(
            f"unknown metric '{name}'. Known metrics: {', '.join(reg.metrics)}.{hint} "
            "Run 'speechqe metrics' for their contracts."
        )
    return reg.metrics[name]


def parse_metric_ref(ref: str) -> tuple[str, str | None]:
    """Split ``'name:value'`` (``--metrics mos_ensemble:bundle/``) into name and value."""
    name, _, value = ref.partition(":")
    return name.strip(), (value.strip() or None)


def create(
    ref: str,
    params: Mapping[str, Any] | None = None,
    device: str = "cpu",
    *,
    source: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Metric:
    """Instantiate a metric from ``'name'`` or ``'name:value'`` and a params mapping; the
    values are validated and converted by the metric's ``Params`` types
    (:func:`~speechqe.metric.build_params`).

    Args:
        source, labels: where the parameters came from, named in errors (see
            :func:`~speechqe.metric.build_params`).

    Raises:
        ConfigError: unknown metric, an unknown or bad parameter (named, with its value and
            the expected type or choices), or a ``:value`` for a metric without a positional
            parameter.
    """
    name, value = parse_metric_ref(ref)
    cls = get(name)
    values = dict(params or {})
    labels = dict(labels or {})
    if value is not None:
        if not cls.positional:
            raise ConfigError(f"metric '{name}' takes no ':value' argument (got '{ref}')")
        if cls.positional in values and values[cls.positional] != value:
            raise ConfigError(f"metric '{name}': {cls.positional} is given twice ('{ref}' and "
                              f"{cls.positional}={values[cls.positional]!r}); give it once")
        values[cls.positional] = value
        labels.setdefault(cls.positional, f"'{ref}' ({cls.positional})")
    return cls(build_params(cls, values, source=source, labels=labels), device=device)


def canonical_params(
    ref: str,
    params: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate ``params`` for metric ``ref`` (as :func:`create`, without setting anything
    up) and return the validated values of the keys given, in their canonical form:
    ``{'include_c0': '0'}`` -> ``{'include_c0': False}``.

    Raises:
        ConfigError: as :func:`create`.
    """
    metric = create(ref, params, source=source, labels=labels)
    return canonical_values(metric.params, (params or {}).keys())


#: How a ``--param`` override is named in messages.
PARAM_LABEL = "--param {metric}.{name}"


def resolve_params(
    entries: Sequence[Any],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    origin: str = "",
    label: str = PARAM_LABEL,
) -> list[dict[str, Any]]:
    """The parameters each entry (a :class:`~speechqe.suites.SuiteEntry`: ``.ref`` and
    ``.params``) runs with: the entry's own (from a suite), updated by
    ``overrides`` (``{metric: {name: value}}``, e.g. ``--param``), validated against the
    metric's ``Params`` and in canonical form (``{'include_c0': '0'}`` ->
    ``{'include_c0': False}``), in the order of ``entries``.

    Args:
        origin: where the entries came from (a suite file), named in errors about their
            parameters.
        label: how an override is named in errors (``{metric}`` and ``{name}`` filled in).

    Raises:
        ConfigError: an unknown metric; an unknown or bad parameter, named by where it came
            from (``--param mcd.include_c0: Input should be a valid boolean ... (got
            'maybe')``), with the expected type or choices; overrides for a metric that is
            not among the entries.
    """
    overrides = {m: dict(p) for m, p in (overrides or {}).items()}
    names = [parse_metric_ref(e.ref)[0] for e in entries]
    missing = sorted(set(overrides) - set(names))
    if missing:
        given = label.partition("{metric}")[0].rstrip(" .") or "parameters"
        raise ConfigError(f"{given} given for metrics not in this run: {missing} "
                          f"(this run's metrics: {', '.join(names)})")
    out = []
    for e, name in zip(entries, names):
        own, extra = dict(e.params), overrides.get(name, {})
        labels = {k: f"{origin}: {name}.{k}" if origin else f"{name}.{k}" for k in own}
        labels.update({k: label.format(metric=name, name=k) for k in extra})
        out.append(canonical_params(e.ref, {**own, **extra}, labels=labels))
    return out


def output_specs() -> dict[str, Any]:
    """Every output name -> its :class:`~speechqe.metric.OutputSpec` (for reports)."""
    return {o.name: o for cls in available().values() for o in cls.spec.outputs}
