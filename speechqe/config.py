"""One typed configuration system for every YAML/JSON file and parameter set (pydantic v2).

Every configuration — suites, training configs, vocoder configs, evaluation parameters, watch
files, metric parameters, asset records, encoder / ASR / speaker settings — is a
:class:`StrictModel` (a third-party metric's parameters may also be a frozen dataclass, validated
through :func:`validate`), so every file gives errors in one style, ``source: key.path: message
(got value)``::

    mos.yaml: weak.learners.0: unknown key 'knd' (known: kind, params, ...)
    --param mcd.include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')

Unknown keys are errors everywhere; defaults live on the model and nowhere else; values are
parsed once into their declared types with pydantic's lax mode, which suits text from a command
line (``'0'``, ``'false'`` and ``False`` are the same boolean, so they hash to the same stored
parameters; ``'1e-3'`` is a float). :data:`Float` and :data:`Int` refuse what lax mode would
let through by accident (booleans as numbers, NaN, infinities).

Why pydantic models rather than dataclasses validated from outside: a model validates however
it is built (a file, a command line, or ``McdParams(include_c0='maybe')`` in code, which raises
the same :class:`~speechqe.errors.ConfigError`), states its bounds and choices as data
(``Field(ge=0)``, ``Literal``), and gives a canonical JSON dump for hashing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Mapping, Sequence, TypeVar

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from speechqe.errors import ConfigError

__all__ = [
    "StrictModel",
    "Float",
    "Int",
    "NONE_WORDS",
    "validate",
    "load_file",
    "read_document",
    "read_mapping",
    "describe_errors",
    "plain",
]

T = TypeVar("T")


class _StrictModelMeta(type(pydantic.BaseModel)):  # type: ignore[misc]
    """Turns the :class:`ValidationError` of a model built in code (``Model(...)``) into a
    :class:`ConfigError` in the one message style. Only direct calls pass through here:
    pydantic validates nested models and :meth:`~pydantic.BaseModel.model_validate` input
    without calling the class, so nested errors keep their full key path."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, cls, cls.__name__)) from None


class StrictModel(pydantic.BaseModel, metaclass=_StrictModelMeta):
    """Base of speechqe's configuration models: unknown keys are errors, instances are frozen
    (hashable, safe to share between tasks), defaults are validated too.

    A model built in code with a bad value (``McdParams(include_c0='maybe')``) raises the same
    :class:`ConfigError`, in the same style, as one read from a file with :func:`validate`
    (the source named is the class).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ------------------------------------------------------------------------------------------
# Field types shared by the configs
# ------------------------------------------------------------------------------------------
def _not_bool(v: Any) -> Any:
    # pydantic's lax mode reads True as 1.0; a boolean where a number belongs is a mistake
    if isinstance(v, bool):
        raise ValueError(f"Input should be a number, not a boolean (got {v!r})")
    return v


def _none_word(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("none", "null"):
        return None
    return v


#: A finite float (NaN and infinities refused; ``'1e-3'`` from a command line is read as 0.001;
#: booleans refused).
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
#: An integer (``'3'`` and ``3.0`` are read as 3, ``3.5`` and booleans refused).
Int = Annotated[int, BeforeValidator(_not_bool)]
#: Marks an optional field whose ``None`` can be written ``none`` or ``null`` on a command line
#: (``--param mcd.mcep_alpha=none``): ``Annotated[Float | None, NONE_WORDS]``.
NONE_WORDS = BeforeValidator(_none_word)


# ------------------------------------------------------------------------------------------
# Error messages
# ------------------------------------------------------------------------------------------
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
            tp = _inner_model(tp) or tp
            continue
        tp = _inner_model(tp) or tp
        fields = getattr(tp, "model_fields", None)
        if fields is not None and part in fields:
            tp = fields[part].annotation
            continue
        dc = getattr(tp, "__dataclass_fields__", None)
        if dc is not None and part in dc:
            tp = dc[part].type
            continue
        return None
    return _inner_model(tp) or tp


def _inner_model(tp: Any) -> Any:
    """The model inside ``Optional[...]``, ``tuple[...]``, ``list[...]``, ``dict[str, ...]``."""
    if _fields_of(tp):
        return tp
    for arg in getattr(tp, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _message(err: Mapping[str, Any]) -> str:
    """One pydantic error's message, with the bad value unless our own validator named it."""
    msg = err.get("msg", "invalid value")
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    if "input" in err and err.get("type") not in ("missing", "value_error", "assertion_error"):
        shown = repr(err["input"])
        msg += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
    return msg


def describe_errors(
    exc: ValidationError | Sequence[Mapping[str, Any]],
    model: Any,
    source: str,
    *,
    noun: str = "key",
    labels: Mapping[str, str] | None = None,
) -> str:
    """A :class:`ValidationError` (or its ``errors()``) as one line per problem, joined by
    ``'; '``: ``source: a.b.c: message (got X)``. Unknown keys list the known ones.

    Args:
        noun: what a key is called in messages (``'parameter'``: ``unknown parameter 'x'``).
        labels: top-level keys that came from somewhere else than ``source`` and the name to
            show for them instead (``{'include_c0': '--param mcd.include_c0'}``); their lines
            read ``--param mcd.include_c0: message``.
    """
    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else list(exc)
    labels = labels or {}
    own, labelled = [], []
    for err in errors:
        loc = tuple(err.get("loc") or ())
        label = labels.get(loc[0]) if loc and isinstance(loc[0], str) else None
        if err.get("type") == "extra_forbidden" and loc:
            parent = _resolve(model, loc[:-1])
            known = _fields_of(parent)
            has_fields = hasattr(parent, "model_fields") or hasattr(parent, "__dataclass_fields__")
            hint = f" (known: {', '.join(known) if known else 'none'})" if has_fields else ""
            if label is not None:
                where, msg = ".".join([label, *map(str, loc[1:])]), f"unknown {noun}{hint}"
            else:
                where, msg = ".".join(str(p) for p in loc[:-1]), f"unknown {noun} '{loc[-1]}'{hint}"
        else:
            msg = _message(err)
            where = ".".join([label, *map(str, loc[1:])] if label is not None else map(str, loc))
            if not loc and labels:  # a check across keys: say which came from elsewhere
                msg += f" (set by {', '.join(labels.values())})"
        line = f"{where}: {msg}" if where else msg
        (labelled if label is not None else own).append(line)
    parts = []
    if own:
        parts.append((f"{source}: " if source else "") + "; ".join(own))
    return "; ".join(parts + labelled)


def _unknown_keys(model: Any, data: Any) -> list[dict[str, Any]]:
    """``extra_forbidden`` errors for a plain dataclass (pydantic ignores extra keys there)."""
    if not (_fields_of(model) and isinstance(data, Mapping)):
        return []
    known = set(_fields_of(model))
    return [{"type": "extra_forbidden", "loc": (k,), "msg": "Extra inputs are not permitted",
             "input": data[k]} for k in data if k not in known]


def validate(
    model: type[T],
    data: Any,
    source: str = "",
    *,
    noun: str = "key",
    labels: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> T:
    """Build ``model`` (a :class:`StrictModel`, a dataclass, or any type pydantic validates)
    from ``data``; pydantic's lax mode converts strings from a command line (``'0'``,
    ``'false'`` -> ``False``; ``'1e-3'`` -> ``0.001``).

    Args:
        source: the file or option the data came from, named in every message.
        noun, labels: see :func:`describe_errors`.
        context: pydantic's validation context, read by the model's validators.

    Raises:
        ConfigError: one message naming ``source`` (or the label) and each bad key and value.
    """
    try:
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            return model.model_validate(data, context=context)
        unknown = _unknown_keys(model, data)
        if unknown:
            raise ConfigError(describe_errors(unknown, model, source, noun=noun, labels=labels))
        return _adapter(model).validate_python(data, context=context)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, model, source, noun=noun, labels=labels)) from None


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


def read_document(path: str | Path, what: str = "config") -> Any:
    """Read a YAML or JSON file (JSON when the name ends in ``.json``); an empty file is
    ``None``.

    Raises:
        ConfigError: missing or unreadable file, text that is not UTF-8, or a YAML/JSON syntax
            error (with its line).
    """
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {path} is a folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not UTF-8 text (byte {raw[exc.start]:#04x}); "
                          "save the file as UTF-8") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                          f"{str(exc).strip()}") from None


def read_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping (an empty file is ``{}``).

    Raises:
        ConfigError: as :func:`read_document`, or a document that is not a mapping.
    """
    doc = read_document(path, what)
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
