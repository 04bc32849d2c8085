"""The metric contract.

A metric is a pure numeric core (``speechqe.metrics.functional``) plus a thin adapter: a
:class:`Metric` subclass whose :class:`MetricSpec` declares, as data, everything the runner and
the reports need to know (input sample rate, reference/text needs, direction, range,
aggregation, device, batching). The runner decodes and resamples each signal once and hands
metrics ready arrays through :class:`ScoringInput`; metrics never read files or resample.

One metric may emit several outputs computed together (DNSMOS gives SIG, BAK, OVRL and P.808);
each output has its own :class:`OutputSpec` and its own stored record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Literal, Mapping, Sequence

import numpy as np

from speechqe.audio import LoadedAudio, check_duration
from speechqe.config import StrictModel, plain, validate
from speechqe.errors import (
    ItemError,
    MissingReferenceError,
    MissingTextError,
    TooLongError,
)
from speechqe.manifest import AudioItem

Aggregation = Literal["mean", "ratio"]
Device = Literal["cpu", "cuda"]

#: The longest input (seconds) a metric that declares no length rule of its own is given:
#: whole-signal models and transforms grow with the input (an SSL transformer's attention with
#: its square), so an undeclared metric is refused above this, before any decoding, rather than
#: let one long file exhaust the machine's memory.
DEFAULT_MAX_DURATION = 120.0


@dataclass(frozen=True)
class OutputSpec:
    """One stored number produced by a metric.

    Attributes:
        name: the metric name in results (``pesq``, ``dnsmos_ovrl``, ``wer``).
        higher_is_better: direction, used by reports and regression flags (``None``: neither).
        valid_range: ``(low, high)`` bounds of valid values (``None``: unbounded); a value
            outside is a bug and is recorded as an error, never stored as a score.
        unit: e.g. ``'dB'``, ``'cents'``, ``'MOS'``.
        aggregation: ``'mean'`` of per-item values, or ``'ratio'``: the sum of the numerator
            field over the sum of the denominator field of each record's ``extra`` (corpus WER
            = summed edits / summed reference words).
        ratio: ``(numerator_field, denominator_field)`` when ``aggregation == 'ratio'``.
        regression_threshold: the smallest worse change of the aggregate, in :attr:`unit`,
            that run comparisons flag as a regression by default (``speechqe compare``, the
            report, the flow's gate; ``--threshold NAME=VALUE`` overrides it). ``None``: a
            fraction of the baseline (``--relative``, 1% by default). A value suits an
            absolute scale where a relative one does not: 1% of a 5% WER is a single word on
            a 2000-word set. Documented per output in ``docs/orchestration.md``.
    """

    name: str
    higher_is_better: bool | None
    valid_range: tuple[float | None, float | None] = (None, None)
    unit: str = ""
    aggregation: Aggregation = "mean"
    ratio: tuple[str, str] | None = None
    description: str = ""
    regression_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.aggregation == "ratio" and not self.ratio:
            raise ValueError(f"{self.name}: ratio aggregation needs ratio=(numerator, denominator)")
        t = self.regression_threshold
        if t is not None and not (t >= 0 and np.isfinite(t)):
            raise ValueError(f"{self.name}: regression_threshold must be a finite value >= 0 (got {t})")

    def check(self, value: float) -> None:
        """Raise ``ValueError`` if ``value`` is NaN or outside :attr:`valid_range`."""
        if not np.isfinite(value):
            raise ValueError(f"{self.name} is not finite ({value})")
        lo, hi = self.valid_range
        if (lo is not None and value < lo - 1e-9) or (hi is not None and value > hi + 1e-9):
            raise ValueError(f"{self.name}={value} is outside its valid range {self.valid_range}")


@dataclass(frozen=True)
class MetricSpec:
    """The contract of one metric, as data.

    Attributes:
        name: registry name (``--metrics name``).
        version: bump whenever a change can alter the numbers; part of every stored key.
        outputs: what it emits.
        sample_rate: the rate its input must have (``None``: native rate).
        needs_reference, needs_text: inputs it requires.
        prompt_as_reference: a speaker prompt (``prompt_path``) may stand in for the reference
            (speaker similarity); the runner then plans and loads the metric for sets that
            have prompts but no references.
        device: ``'cpu'`` or ``'cuda'`` when it can use a GPU.
        batched: whether :meth:`Metric.score_batch` is implemented natively (items are then
            length-bucketed by the runner).
        min_duration: shortest input in seconds (shorter -> ``too_short`` error).
        max_duration: longest input in seconds (the signal, and the reference or prompt when
            the metric uses them), judged from the file headers before anything is decoded;
            longer -> ``too_long`` error record. ``None``: any length, because the metric
            works window by window in bounded memory; it must then accept a streamed input
            (:class:`speechqe.streaming.StreamedAudio`, see :attr:`length_rule`).
        length_rule: how the metric handles length, in words (``speechqe metrics --json``
            and in ``docs/metrics.md``), e.g. "9.01 s windows every 1 s, mean over windows".
        kind: ``'intrusive'``, ``'non-intrusive'``, ``'asr'``, ``'speaker'``, ``'mos-predictor'``.
        source: the library or paper it implements.
        core: the module that computes the numbers (the adapter delegates to it), e.g.
            ``speechqe.metrics.functional.pesq`` or ``speechqe.asr``; shown by
            ``speechqe metrics`` beside the adapter's own module.
        extra: the pip extra that installs its dependencies (``''``: core).
    """

    name: str
    version: str
    outputs: tuple[OutputSpec, ...]
    sample_rate: int | None = None
    needs_reference: bool = False
    needs_text: bool = False
    prompt_as_reference: bool = False
    device: Device = "cpu"
    batched: bool = False
    min_duration: float = 0.0
    max_duration: float | None = DEFAULT_MAX_DURATION
    length_rule: str = ""
    kind: str = "non-intrusive"
    description: str = ""
    source: str = ""
    licence: str = ""
    core: str = ""
    extra: str = ""

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def length_text(self) -> str:
        """:attr:`length_rule`, or the default rule in words when none was declared."""
        if self.length_rule:
            return self.length_rule
        if self.max_duration is None:
            return "any length"
        return f"whole signal; refused above {self.max_duration:g} s (default)"

    def output(self, name: str) -> OutputSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)


@dataclass
class ScoringInput:
    """What a metric receives for one item: decoded audio (memoised per rate), the
    reference, the speaker prompt, the transcript, and a per-item cache.

    The runner's guarantee: within one chunk of items, every metric receives the *same*
    ``ScoringInput`` objects, in the order the metrics are listed, so an analysis used by two
    metrics (WORLD features for MCD and F0, an ASR hypothesis for WER and CER) is computed
    once and shared through :meth:`cached`. An analysis of the reference (or prompt) alone is
    shared further, across the items and systems that use the same file and across runs,
    through :meth:`persistent`.

    ``audio`` (and ``ref``, ``prompt``) is a :class:`LoadedAudio`, or, for a long input that
    only windowed metrics (``max_duration=None``) score, a
    :class:`speechqe.streaming.StreamedAudio` read window by window.
    """

    item: AudioItem
    audio: LoadedAudio
    ref: LoadedAudio | None = None
    prompt: LoadedAudio | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    #: the run's :class:`speechqe.analysis_cache.AnalysisCache` (``None``: nothing shared)
    analyses: Any = None

    @property
    def text(self) -> str | None:
        return self.item.text

    def signal(self, sample_rate: int | None) -> np.ndarray:
        """The item's signal at ``sample_rate`` (``(samples,)`` float32)."""
        return self.audio.at(sample_rate)

    def reference(self, sample_rate: int | None) -> np.ndarray:
        """The reference signal at ``sample_rate``; raises :class:`MissingReferenceError`."""
        if self.ref is None:
            raise MissingReferenceError("this metric needs a reference and the item has none")
        return self.ref.at(sample_rate)

    def require_text(self) -> str:
        if self.item.text is None or not self.item.text.strip():
            raise MissingTextError("this metric needs a transcript and the item has none")
        return self.item.text

    def cached(self, key: str, compute):
        """Memoise ``compute()`` under ``key`` for this item."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def persistent(
        self, kind: str, content_sha256: str | None, settings: Mapping[str, Any], compute,
    ) -> dict[str, np.ndarray]:
        """An analysis of one file that does not depend on the item (the reference's or
        prompt's WORLD features, speaker embedding), shared through the run's analysis cache
        by every item, system and later run that uses the same content with the same
        ``settings``; computed here when there is no cache or no content hash.

        Args:
            kind: the analysis, e.g. ``'world'``.
            content_sha256: the analysed file's content hash (``item.ref_sha256``, ...).
            settings: JSON-able description of everything else that determines the result,
                including library versions and the rate the file was analysed at.
            compute: ``() -> {name: array}``.
        """
        if self.analyses is None or not content_sha256:
            return {k: np.asarray(v) for k, v in compute().items()}
        return self.analyses.get_or_compute(kind, content_sha256, settings, compute)


@dataclass
class ItemScore:
    """A metric's result for one item: one value per output, plus JSON-able extra fields
    (e.g. F0 voicing counts, ASR hypothesis and edit counts).

    An output that is undefined for this item while the others are fine (F0 correlation when
    fewer than two frames are voiced, but the voicing error is known) goes in ``errors``
    instead of ``values``; it is stored as an error record with that reason.
    """

    values: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, ItemError] = field(default_factory=dict)


ItemResult = ItemScore | ItemError


class NoParams(StrictModel):
    """Parameters of a metric that has none."""


class Metric(ABC):
    """Adapter base class. Subclasses set :attr:`spec`, optionally :attr:`Params` (a
    :class:`~speechqe.config.StrictModel`: typed fields, its defaults the only defaults; a
    third-party plugin may also use a frozen dataclass, validated the same way) and implement
    :meth:`score_item` or, for batched metrics, :meth:`score_batch`.

    Heavy libraries are imported in :meth:`setup` (or lazily in the functional core), never at
    module import, so ``speechqe metrics`` can list every contract without them.
    """

    spec: ClassVar[MetricSpec]
    Params: ClassVar[type] = NoParams
    #: name of the parameter set by ``--metrics name:VALUE`` (e.g. a bundle path)
    positional: ClassVar[str | None] = None

    def __init__(self, params: Any = None, device: str = "cpu"):
        if params is None:
            params = build_params(type(self), {})
        elif type(params) is not self.Params:
            # exactly: a subclass's extra fields would enter this metric's model id
            raise TypeError(f"{type(self).__name__} params must be {self.Params.__name__} "
                            f"(got {type(params).__name__})")
        elif dataclasses.is_dataclass(params):
            # a dataclass built in code skipped validation: validate (and convert) it now
            params = build_params(type(self), {f.name: getattr(params, f.name)
                                               for f in dataclasses.fields(params)})
        self.params = params
        self.device = device
        self._ready = False
        self._store_id: str | None = None

    # --- identity ---------------------------------------------------------------------------
    def model_id(self) -> str:
        """Identifies everything besides the input that determines the numbers: parameters
        and, for model-based metrics, the weights' checksums. Part of each stored key.
        May set the metric up (resolving its model); listing and creating metrics must not."""
        return params_id(self.params)

    @property
    def store_id(self) -> str:
        """:meth:`model_id`, computed once (parameters are frozen and weights fixed once set
        up); the runner puts it in every record's key."""
        if self._store_id is None:
            self._store_id = self.model_id()
        return self._store_id

    @property
    def name(self) -> str:
        return self.spec.name

    # --- lifecycle --------------------------------------------------------------------------
    def setup(self) -> None:
        """Load models / import libraries. Called once per process before scoring."""

    def ensure_ready(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    # --- length -----------------------------------------------------------------------------
    def max_seconds(self) -> float | None:
        """The longest input (seconds) this instance scores: :attr:`MetricSpec.max_duration`,
        unless the limit depends on the parameters (MCD/F0: only with DTW alignment)."""
        return self.spec.max_duration

    # --- scoring ----------------------------------------------------------------------------
    def check_input(self, inp: ScoringInput) -> None:
        """Contract checks shared by all metrics: reference, text, minimum and maximum
        duration."""
        if self.spec.needs_reference and inp.ref is None and not (
            self.spec.prompt_as_reference and inp.prompt is not None
        ):
            raise MissingReferenceError(
                f"{self.spec.name} needs a reference; none was matched for this item"
            )
        if self.spec.needs_text:
            inp.require_text()
        if self.spec.min_duration > 0:
            check_duration(
                n_samples(inp.audio), inp.audio.sample_rate, self.spec.min_duration,
                self.spec.name,
            )
            if self.spec.needs_reference and inp.ref is not None:
                check_duration(
                    n_samples(inp.ref), inp.ref.sample_rate, self.spec.min_duration,
                    f"{self.spec.name} (reference)",
                )
        self.check_length(inp)

    def check_length(self, inp: ScoringInput) -> None:
        """Raise :class:`TooLongError` when the signal (or the reference or prompt, for a
        metric that uses them) is longer than :meth:`max_seconds`. The runner applies the same
        rule to the file headers before decoding; this catches inputs built in memory."""
        limit = self.max_seconds()
        if limit is None:
            return
        signals = [("", inp.audio)]
        if self.spec.needs_reference:
            signals += [(" (reference)", inp.ref), (" (prompt)", inp.prompt)]
        for what, audio in signals:
            if audio is not None and audio.duration > limit:
                raise too_long(self, audio.duration, what)

    def score_item(self, inp: ScoringInput) -> ItemScore:
        """Score one item. Raise an :class:`ItemError` subclass for bad input.

        Batched metrics implement :meth:`score_batch` only; this then scores a batch of one."""
        if type(self).score_batch is Metric.score_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither score_item nor score_batch")
        res = self.score_batch([inp])[0]
        if isinstance(res, ItemError):
            raise res
        return res

    def checked(self, inputs: Sequence[ScoringInput]) -> tuple[list[ItemResult | None], list[int]]:
        """Run :meth:`check_input` on each input. Returns a result list aligned with
        ``inputs`` holding the failures (``None`` elsewhere) and the indices that passed, which a
        batched metric then scores together and fills in."""
        out: list[ItemResult | None] = [None] * len(inputs)
        ok: list[int] = []
        for i, inp in enumerate(inputs):
            try:
                self.check_input(inp)
                ok.append(i)
            except ItemError as exc:
                out[i] = exc
        return out, ok

    def score_batch(self, inputs: Sequence[ScoringInput]) -> list[ItemResult]:
        """Score several items; the result is aligned with ``inputs`` (one entry each, an
        :class:`ItemScore` or an :class:`ItemError`; never filtered)."""
        out: list[ItemResult] = []
        for inp in inputs:
            try:
                out.append(self.score_item(inp))
            except ItemError as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        """Release models (optional)."""


def n_samples(audio: Any) -> int:
    """Samples of a decoded (:class:`LoadedAudio`) or streamed signal."""
    return audio.samples.size if isinstance(audio, LoadedAudio) else int(audio.frames)


def too_long(metric: Metric, seconds: float, what: str = "") -> TooLongError:
    """The ``too_long`` error of ``metric`` for an input of ``seconds`` (``what``: which
    signal, e.g. ``' (reference)'``)."""
    return TooLongError(
        f"{seconds:.1f} s{what} is longer than the {metric.max_seconds():g} s maximum of "
        f"{metric.spec.name} ({metric.spec.length_text}); cut the file into shorter items"
    )


def params_id(params: Any) -> str:
    """A short stable id of validated parameters: ``'default'`` for a metric without
    parameters, else ``'p-'`` + 12 hex digits of the sha256 of their canonical JSON (every
    field, sorted keys).

    Every field counts, defaults included, so that changing a default changes the id (and the
    numbers are computed again) instead of mixing with records made under the old default.
    Values are hashed as validated (``include_c0='0'``, ``0`` and ``False`` are one value).
    """
    if isinstance(params, StrictModel) or dataclasses.is_dataclass(params):
        d = plain(params) if isinstance(params, StrictModel) else dataclasses.asdict(params)
    else:
        return "default"
    if not d:
        return "default"
    blob = json.dumps(d, sort_keys=True, default=str)
    return "p-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def asset_model_id(params: Any, asset_name: str) -> str:
    """``model_id`` of a metric whose numbers are fixed by its parameters and one registered
    asset: the params id plus the asset's checksum fingerprint."""
    from speechqe import assets

    return f"{params_id(params)}/{asset_name}-{assets.get(asset_name).fingerprint()}"


def build_params(
    cls: type[Metric],
    values: Mapping[str, Any] | None,
    *,
    source: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Any:
    """Validate ``values`` into ``cls.Params``: each value is converted to its declared type
    (pydantic's lax mode, right for strings from a command line: ``'0'``, ``'false'`` and
    ``False`` are one boolean, ``'1e-3'`` a float), ``Literal`` choices and bounds are
    checked, unknown keys are errors listing the known ones.

    Args:
        source: named in messages (default: ``metric 'NAME'``).
        labels: names of keys that came from elsewhere (``{'include_c0':
            '--param mcd.include_c0'}``), shown instead of ``source`` for them.

    Raises:
        ConfigError: every bad or unknown key, with its value and what was expected.
    """
    return validate(cls.Params, dict(values or {}), source or f"metric '{cls.spec.name}'",
                    noun="parameter", labels=labels)


def canonical_values(params: Any, keys: Iterable[str]) -> dict[str, Any]:
    """The validated values of ``keys`` in ``params`` as JSON-able data (``{'include_c0':
    '0'}`` given -> ``{'include_c0': False}``): the form recorded with runs and requests."""
    d = plain(params) if isinstance(params, StrictModel) else dataclasses.asdict(params)
    return {k: plain(d[k]) for k in keys}
