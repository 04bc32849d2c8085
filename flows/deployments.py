"""Schedules and parameters of the served evaluations (``speechqe serve``); nothing else.

A watch file lists the folders or manifest globs to evaluate on a schedule::

    watches:
      - name: tts-nightly                 # deployment and run name (the history groups by it)
        source: /data/tts/nightly/*.jsonl # a folder, a manifest, or a glob of manifests
        cron: "0 2 * * *"                 # or interval_minutes: 60
        timezone: Europe/Berlin           # default UTC
        suite: tts
        store: /data/speechqe/tts.duckdb
        references: /data/tts/natural     # any other parameter of the evaluate-speech-set flow
        regression_thresholds: {pesq: 0.05, wer: 0.005}

Scheduled runs use ``skip_unchanged: true`` unless a watch says otherwise: only new or
changed files are scored (the store keys), and a night without any change records no run.
Unknown keys are errors.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from speechqe.errors import ConfigError
from speechqe.engine.evaluation import EvaluationConfig

from .evaluate import evaluate_speech_set

_WATCH_KEYS = {"name", "source", "cron", "interval_minutes", "timezone", "description"}
#: Flow parameters a watch may set (everything the flow takes but its source and name).
FLOW_PARAMETERS = tuple(
    p for p in inspect.signature(evaluate_speech_set.fn).parameters if p not in ("source", "name")
)
#: Defaults of scheduled runs that differ from a one-off evaluation.
SCHEDULED_DEFAULTS = {"skip_unchanged": True}


@dataclass(frozen=True)
class Watch:
    """One scheduled evaluation: a source, a schedule, flow parameters."""

    name: str
    source: str
    cron: str | None = None
    interval_minutes: float | None = None
    timezone: str = "UTC"
    description: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.source:
            raise ConfigError("a watch needs a name and a source")
        if (self.cron is None) == (self.interval_minutes is None):
            raise ConfigError(f"watch {self.name}: give exactly one of cron or interval_minutes")
        if self.interval_minutes is not None and self.interval_minutes <= 0:
            raise ConfigError(f"watch {self.name}: interval_minutes must be > 0")
        if self.cron is not None:
            from prefect.schedules import Cron

            try:
                Cron(self.cron, timezone=self.timezone)
            except ValueError as exc:
                raise ConfigError(f"watch {self.name}: bad schedule: {exc}") from None
        bad = sorted(set(dict(self.parameters)) - set(FLOW_PARAMETERS))
        if bad:
            raise ConfigError(
                f"watch {self.name}: unknown parameters {bad} (known: {', '.join(FLOW_PARAMETERS)})"
            )
        # Validate the flow parameters now, not at 2 a.m.
        cfg_keys = {k: v for k, v in self.flow_parameters().items() if k != "fail_on_regression"}
        EvaluationConfig.create(**cfg_keys)

    def flow_parameters(self) -> dict[str, Any]:
        return {**SCHEDULED_DEFAULTS, **dict(self.parameters), "source": self.source,
                "name": self.name}

    def schedule(self):
        from prefect.schedules import Cron, Interval

        if self.cron is not None:
            return Cron(self.cron, timezone=self.timezone)
        from datetime import timedelta

        return Interval(timedelta(minutes=self.interval_minutes), timezone=self.timezone)


def watch_from_dict(d: Mapping[str, Any], origin: str = "watch") -> Watch:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{origin}: a watch is a mapping with name, source and a schedule")
    fixed = {k: d[k] for k in _WATCH_KEYS if k in d}
    params = tuple(sorted((k, v) for k, v in d.items() if k not in _WATCH_KEYS))
    try:
        return Watch(**fixed, parameters=params)
    except TypeError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def load_watches(path: str | Path) -> list[Watch]:
    """Read a watch file (YAML: ``watches: [...]``)."""
    from speechqe.config import read_mapping

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such watch file: {path}")
    doc = read_mapping(path, "watch")  # syntax errors, non-UTF-8 text: ConfigError with the line
    if set(doc) != {"watches"} or not isinstance(doc["watches"], list):
        raise ConfigError(f"{path}: a watch file is a mapping with one key, 'watches', a list")
    watches = [watch_from_dict(w, f"{path} watch {k + 1}") for k, w in enumerate(doc["watches"])]
    names = [w.name for w in watches]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: watch names must be unique ({names})")
    return watches


def deployments(watches: Sequence[Watch]) -> list[Any]:
    """One Prefect deployment of ``evaluate-speech-set`` per watch (loaded by module path, so
    the served runs import the installed package)."""
    from prefect.deployments.runner import EntrypointType

    return [
        evaluate_speech_set.to_deployment(
            name=w.name,
            schedules=[w.schedule()],
            parameters=w.flow_parameters(),
            description=w.description or f"evaluate {w.source} on a schedule",
            tags=["speechqe"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for w in watches
    ]
