"""One typed configuration system for every YAML/JSON file and parameter set (pydantic v2).

Every configuration — suites, training configs, vocoder configs, evaluation parameters, watch
files, metric parameters, asset records — is a :class:`StrictModel` (or a frozen dataclass
validated through :func:`validate`), so every file gives errors in one style::

    mos.yaml: weak.learners.0.kind: unknown key 'knd' (known: kind, params, ...)
    --param mcd.include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')

Unknown keys are errors everywhere; defaults live on the model and nowhere else; values are
parsed once into their declared types (``'0'``, ``'false'`` and ``False`` are the same boolean,
so they hash to the same stored parameters).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, TypeVar

import pydantic
from pydantic import ConfigDict, TypeAdapter, ValidationError

from speechqe.errors import ConfigError

__all__ = [
    "StrictModel",
    "validate",
    "load_file",
    "read_mapping",
    "describe_errors",
    "plain",
]

T = TypeVar("T")


class StrictModel(pydantic.BaseModel):
    """Base of speechqe's configuration models: unknown keys are errors, instances are frozen
    (hashable, safe to share between tasks), defaults are validated too."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _fields_of(tp: Any) -> list[str]:
    fields = getattr(tp, "model_fields", None)
    if fields is not None:
        return list(fields)
    dc = getattr(tp, "__dataclass_fields__", None)
    return list(dc) if dc is not None else []


def _resolve(tp: Any, loc: tuple[Any, ...]) -> Any:
    """The type at ``loc`` inside ``tp`` (best effort, for naming the known keys)."""
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(tp, "model_fields", None)
        if fields is not None and part in fields:
            tp = fields[part].annotation
            continue
        dc = getattr(tp, "__dataclass_fields__", None)
        if dc is not None and part in dc:
            tp = dc[part].type
            continue
        return None
    # unwrap Optional / tuple[...] / list[...]
    for arg in getattr(tp, "__args__", ()) or ():
        if _fields_of(arg):
            return arg
    return tp


def describe_errors(exc: ValidationError, model: Any, source: str) -> str:
    """A :class:`ValidationError` as one line per problem: ``source: a.b.c: message (got X)``.
    Unknown keys list the known ones."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc") or ())
        where = ".".join(str(p) for p in loc)
        if err.get("type") == "extra_forbidden":
            known = _fields_of(_resolve(model, loc[:-1])) if loc else []
            msg = f"unknown key '{loc[-1]}'" if loc else "unknown key"
            where = ".".join(str(p) for p in loc[:-1])
            if known:
                msg += f" (known: {', '.join(known)})"
        else:
            msg = err.get("msg", "invalid value")
            for prefix in ("Value error, ", "Assertion failed, "):
                msg = msg[len(prefix):] if msg.startswith(prefix) else msg
            # our own validators name the value themselves
            if "input" in err and err.get("type") not in ("missing", "value_error", "assertion_error"):
                shown = repr(err["input"])
                msg += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        lines.append(f"{where}: {msg}" if where else msg)
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(lines)


def validate(model: type[T], data: Any, source: str = "") -> T:
    """Build ``model`` (a :class:`StrictModel`, a dataclass, or any type pydantic validates)
    from ``data``.

    Raises:
        ConfigError: one message naming ``source`` and each bad key.
    """
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, model, source)) from None
    if _fields_of(model) and isinstance(data, Mapping):
        unknown = [k for k in data if k not in _fields_of(model)]
        if unknown:
            known = ", ".join(_fields_of(model)) or "none"
            raise ConfigError(
                f"{source + ': ' if source else ''}unknown key(s) "
                f"{', '.join(repr(u) for u in unknown)} (known: {known})"
            )
    try:
        return _adapter(model).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, model, source)) from None


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


def read_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping.

    Raises:
        ConfigError: missing or unreadable file, text that is not UTF-8, a YAML/JSON syntax
            error (with its line), or a document that is not a mapping.
    """
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not UTF-8 text (byte {raw[exc.start]:#04x}); "
                          "save the file as UTF-8") from None
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                          f"{str(exc).strip()}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys to values "
                          f"(got {type(doc).__name__})")
    return doc


def load_file(model: type[T], path: str | Path, what: str = "config") -> T:
    """:func:`read_mapping` then :func:`validate` against ``model``."""
    return validate(model, read_mapping(path, what), str(path))


def plain(obj: Any) -> Any:
    """A model, dataclass or nested structure as JSON-able dicts, lists and scalars."""
    if isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="json")
    try:
        return _adapter(type(obj)).dump_python(obj, mode="json")
    except Exception:  # noqa: BLE001 - plain values
        return json.loads(json.dumps(obj, default=str))
