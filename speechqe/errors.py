"""Typed errors.

Two families:

* :class:`ItemError` and its subclasses describe a problem with *one item* (a file that cannot
  be read, silent audio, a missing reference, ...). The runner records them per item and metric
  as ``status='error'`` with the class's :attr:`ItemError.code` and the message; they never stop
  a run and never become a score of 0.
* :class:`ConfigError` (bad arguments, unknown suite keys, missing extras or assets) stops the
  command before any work is done, with a message that says how to fix it.
"""

from __future__ import annotations


class SpeechQEError(Exception):
    """Base class of every error raised on purpose by speechqe."""


# --------------------------------------------------------------------------------------------
# Per-item errors
# --------------------------------------------------------------------------------------------
class ItemError(SpeechQEError):
    """A problem with one item; recorded as ``status='error'`` and never fatal to a run."""

    code = "item_error"

    def __init__(self, message: str, *, item_id: str | None = None):
        super().__init__(message)
        self.item_id = item_id
        self.message = message

    def __str__(self) -> str:  # keep the message short and free of the class name
        return self.message


class AudioReadError(ItemError):
    """The file cannot be decoded (corrupt, not audio, unsupported container)."""

    code = "unreadable"


class EmptyAudioError(ItemError):
    """The file decodes but holds zero samples."""

    code = "empty"


class NonFiniteAudioError(ItemError):
    """The signal holds NaN or infinite samples."""

    code = "non_finite"


class SilentAudioError(ItemError):
    """The signal is digital silence (peak below the silence threshold)."""

    code = "silent"


class TooShortError(ItemError):
    """The signal is shorter than a metric's minimum duration."""

    code = "too_short"


class TooLongError(ItemError):
    """The input is longer than a metric's declared maximum (refused before decoding)."""

    code = "too_long"


class MissingReferenceError(ItemError):
    """The metric needs a reference signal and the item has none."""

    code = "missing_reference"


class MissingTextError(ItemError):
    """The metric needs a transcript and the item has none."""

    code = "missing_text"


class LengthMismatchError(ItemError):
    """Reference and degraded signal lengths differ more than the metric allows."""

    code = "length_mismatch"


class SampleRateError(ItemError):
    """The item's native sample rate is refused by a metric (e.g. upsampled 8 kHz audio)."""

    code = "sample_rate"


class MetricComputationError(ItemError):
    """The metric's library rejected this input (e.g. PESQ finds no utterance)."""

    code = "metric_failed"


class UnexpectedItemError(ItemError):
    """An exception that is not one of ours, raised while scoring one item.

    The runner wraps it so that one bad item never stops a run, but keeps the original type
    name in the message so that it can be reported as a bug.
    """

    code = "unexpected"


def item_error(code: str, message: str) -> ItemError:
    """Rebuild a typed :class:`ItemError` from its ``code`` (e.g. one stored in a manifest)."""
    stack: list[type[ItemError]] = [ItemError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls(message)
        stack.extend(cls.__subclasses__())
    exc = ItemError(message)
    exc.code = code
    return exc


# --------------------------------------------------------------------------------------------
# Errors that stop a command
# --------------------------------------------------------------------------------------------
class ConfigError(SpeechQEError):
    """Bad arguments or configuration (unknown keys, unknown metric, bad path)."""


class MissingDependencyError(ConfigError):
    """An optional dependency (a pip extra) is not installed."""

    def __init__(self, package: str, extra: str, what: str):
        super().__init__(
            f"{what} needs the Python package '{package}', which is not installed. "
            f"Install it with: pip install 'speechqe[{extra}]'"
        )
        self.package = package
        self.extra = extra


class AssetError(ConfigError):
    """A pretrained asset is missing or fails its checksum."""


class ChecksumMismatchError(AssetError):
    """A file's sha256 differs from the registered one."""


class StoreError(SpeechQEError):
    """The results store cannot be opened or is of an incompatible schema."""
