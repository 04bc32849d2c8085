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
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, Sequence

from pydantic import Field, model_validator

from speechqe.config import Float, StrictModel, read_mapping, validate
from speechqe.errors import ConfigError
from speechqe.engine.evaluation import EvaluationConfig

from .evaluate import evaluate_speech_set

#: Flow parameters a watch may set (everything the flow takes but its source and name).
FLOW_PARAMETERS = tuple(
    p for p in inspect.signature(evaluate_speech_set.fn).parameters if p not in ("source", "name")
)
#: Defaults of scheduled runs that differ from a one-off evaluation.
SCHEDULED_DEFAULTS = {"skip_unchanged": True}


class Watch(StrictModel):
    """One scheduled evaluation: a source, a schedule, flow parameters.

    In a watch file the flow parameters sit beside the watch's own keys (``suite: tts``); they
    are gathered into :attr:`parameters` and validated as the flow would validate them
    (:class:`~speechqe.engine.evaluation.EvaluationConfig`), when the file is loaded.

    Attributes:
        name: deployment and run name. source: folder, manifest or glob of manifests.
        cron, interval_minutes: the schedule (exactly one of them).
        timezone: of the schedule (IANA name).
        parameters: ``(name, value)`` pairs of flow parameters (:data:`FLOW_PARAMETERS`).
    """

    name: str = Field(min_length=1)
    source: str = Field(min_length=1)
    cron: Optional[str] = None
    interval_minutes: Optional[Annotated[Float, Field(gt=0)]] = None
    timezone: str = "UTC"
    description: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _gather_parameters(cls, d: Any) -> Any:
        if not isinstance(d, Mapping):
            return d
        own = {k: v for k, v in d.items() if k in cls.model_fields}
        rest = {k: v for k, v in d.items() if k not in cls.model_fields}
        unknown = [k for k in rest if k not in FLOW_PARAMETERS]
        if unknown:
            known = [k for k in cls.model_fields if k != "parameters"] + list(FLOW_PARAMETERS)
            raise ValueError(f"unknown key(s) {', '.join(repr(k) for k in unknown)} "
                             f"(known: {', '.join(known)})")
        params = dict(own.pop("parameters", None) or ())
        params.update(rest)
        return {**own, "parameters": tuple(sorted(params.items()))}

    @model_validator(mode="after")
    def _schedule_and_flow(self) -> "Watch":
        if (self.cron is None) == (self.interval_minutes is None):
            raise ValueError("give exactly one of cron or interval_minutes")
        if self.cron is not None:
            from prefect.schedules import Cron

            try:
                Cron(self.cron, timezone=self.timezone)
            except ValueError as exc:
                raise ValueError(f"cron: bad schedule: {exc}") from None
        unknown = sorted(set(dict(self.parameters)) - set(FLOW_PARAMETERS))
        if unknown:
            raise ValueError(f"unknown flow parameter(s) {unknown} "
                             f"(known: {', '.join(FLOW_PARAMETERS)})")
        # Validate the flow parameters now, not at 2 a.m.
        cfg_keys = {k: v for k, v in self.flow_parameters().items() if k != "fail_on_regression"}
        try:
            EvaluationConfig.create(**cfg_keys, origin="")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def flow_parameters(self) -> dict[str, Any]:
        return {**SCHEDULED_DEFAULTS, **dict(self.parameters), "source": self.source,
                "name": self.name}

    def schedule(self):
        from prefect.schedules import Cron, Interval

        if self.cron is not None:
            return Cron(self.cron, timezone=self.timezone)
        from datetime import timedelta

        return Interval(timedelta(minutes=self.interval_minutes), timezone=self.timezone)


class WatchFile(StrictModel):
    """The schema of a watch file: ``watches``, a list of watch mappings."""

    watches: list[dict[str, Any]]


def watch_from_dict(d: Mapping[str, Any], origin: str = "watch") -> Watch:
    """A :class:`Watch` from one mapping of a watch file (or the command line's options);
    ``origin`` is named in errors.

    Raises:
        ConfigError: an unknown key, a bad schedule, a bad flow parameter.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{origin}: a watch is a mapping with name, source and a schedule")
    return validate(Watch, d, origin)


def load_watches(path: str | Path) -> list[Watch]:
    """Read a watch file (YAML: ``watches: [...]``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such watch file: {path}")
    doc = validate(WatchFile, read_mapping(path, "watch file"), str(path))
    watches = [watch_from_dict(w, f"{path} watch {k + 1}") for k, w in enumerate(doc.watches)]
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
