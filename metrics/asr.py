"""Intelligibility of generated speech: WER and CER against the intended text.

Both metrics transcribe each item with one ASR backend (:mod:`speechqe.asr`; default:
faster-whisper with the packaged Whisper tiny.en, int8 on CPU) and compare the normalised
transcript with the normalised intended text (Whisper's English normaliser for English, the
documented basic normaliser otherwise; see :mod:`speechqe.asr.normalize`).

ASR runs once per item even when ``wer`` and ``cer`` are both asked for: the runner hands both
metrics the same :class:`ScoringInput` objects, and the hypothesis is kept in the item's cache
under a key holding the backend's model id (weights checksum, language, beam, compute type).
The first of the two metrics to see a chunk transcribes every item of it in one batched call;
the second finds the hypotheses there. Two metrics with different ASR settings never share.

Each record stores the raw hypothesis, both normalised strings and the edit counts (hits,
substitutions, deletions, insertions), so that:

* ``wer`` / ``cer`` aggregate as **corpus** rates: summed edits over summed reference length
  (``aggregation='ratio'``), the convention of ASR evaluation (e.g. the Whisper paper);
* ``wer_utt_mean`` / ``cer_utt_mean`` aggregate as the **mean of per-utterance rates**, the
  convention of Seed-TTS-eval and the TTS papers that use it. Short utterances weigh as much as
  long ones there, so the two numbers differ; report the one your comparison uses.

For languages written without spaces (:data:`speechqe.asr.normalize.NO_SPACE_LANGUAGES`) the
word rate is computed on characters (it then equals CER), as Seed-TTS-eval does for Chinese.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

from speechqe.asr.base import ASROptions
from speechqe.asr.backends import SAMPLE_RATE, BackendConfig
from speechqe.asr.normalize import NORMALIZERS, char_tokens, resolve_name, writes_without_spaces
from speechqe.errors import ItemError, MissingTextError

from speechqe.metric import (
    ItemResult,
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    params_id,
)

Normalizer = Literal[NORMALIZERS]  # type: ignore[valid-type]


class ASRParams(ASROptions):
    """Parameters shared by ``wer`` and ``cer``: the ASR settings of
    :class:`speechqe.asr.base.ASROptions` (backend, model, language, beam_size, compute_type,
    batch_size; their defaults live there) and the text normaliser.

    Attributes:
        normalizer: ``auto`` (Whisper English for ``en``, else ``basic``), ``whisper-english``,
            ``basic`` or ``none``.
    """

    normalizer: Normalizer = "auto"

    def backend_config(self, device: str) -> BackendConfig:
        return BackendConfig(device=device, **self.asr_options())


class _ASRMetric(Metric):
    """Shared machinery of ``wer`` and ``cer``: transcribe once per chunk, then count edits."""

    Params = ASRParams
    positional = "model"
    unit: ClassVar[str]  # "word" or "char"
    length_field: ClassVar[str]

    def setup(self) -> None:
        from speechqe.asr import get_normalizer, load_backend

        self.backend = load_backend(self.params.backend_config(self.device))
        self.normalizer_name = resolve_name(self.params.normalizer, self.params.language)
        self.normalize = get_normalizer(self.params.normalizer, self.params.language)

    def model_id(self) -> str:
        self.ensure_ready()
        return f"{params_id(self.params)}|{self.backend.model_id}|norm:{self.normalizer_name}"

    def hypotheses(self, inputs: Sequence[ScoringInput]) -> None:
        """Fill every input's cache with its hypothesis, transcribing the missing ones in one
        batched call."""
        key = self.backend.cache_key()
        todo = [inp for inp in inputs if key not in inp.cache and inp.text and inp.text.strip()]
        if todo:
            hyps = self.backend.transcribe([inp.signal(SAMPLE_RATE) for inp in todo])
            for inp, hyp in zip(todo, hyps):
                inp.cache[key] = hyp

    def score_batch(self, inputs: Sequence[ScoringInput]) -> list[ItemResult]:
        self.ensure_ready()
        self.hypotheses(inputs)
        key = self.backend.cache_key()
        out: list[ItemResult] = []
        for inp in inputs:
            try:
                text = inp.require_text()  # before any ASR: an item without text costs nothing
                hyp = inp.cached(key, lambda inp=inp: self.backend.transcribe([inp.signal(SAMPLE_RATE)])[0])
                out.append(self.score_hypothesis(text, hyp))
            except ItemError as exc:
                out.append(exc)
        return out


    def score_hypothesis(self, text: str, hypothesis: str) -> ItemScore:
        """Edit counts and rates of ``hypothesis`` against the intended ``text``."""
        from speechqe.asr import count_edits

        self.ensure_ready()
        language = self.params.language
        ref = self.normalize(text)
        hyp = self.normalize(hypothesis)
        if not ref.strip():
            raise MissingTextError(
                f"the transcript {text[:60]!r} is empty after {self.normalizer_name} normalisation"
            )
        if self.unit == "char" or writes_without_spaces(language):
            edits = count_edits(char_tokens(ref, language), char_tokens(hyp, language), "char")
            unit = "char"
        else:
            edits = count_edits(ref, hyp, "word")
            unit = "word"
        rate = edits.rate
        name = self.spec.name
        extra: dict[str, Any] = {
            "hypothesis": hypothesis,
            "ref_norm": ref,
            "hyp_norm": hyp,
            **edits.as_dict(),
            "errors": edits.errors,
            self.length_field: edits.ref_len,
            "unit": unit,
            "asr_model": self.backend.model_id,
            "normalizer": self.normalizer_name,
            "language": language,
        }
        return ItemScore(values={name: rate, f"{name}_utt_mean": rate}, extra=extra)


_COMMON = dict(
    sample_rate=SAMPLE_RATE,
    max_duration=600.0,
    length_rule="whole signal decoded, transcribed by the backend in 30 s windows (Whisper's "
                "own long-form rule); refused above 600 s",
    needs_text=True,
    device="cuda",
    batched=True,
    kind="asr",
    core="speechqe.asr",
    source="openai-whisper (Radford et al. 2023) or faster-whisper/CTranslate2 transcripts; "
           "edit counts with jiwer; Whisper EnglishTextNormalizer",
    licence="MIT (whisper), Apache-2.0 (jiwer)",
    extra="models",
)


class WER(_ASRMetric):
    """Word error rate of the ASR transcript against the intended text."""

    unit = "word"
    length_field = "ref_words"
    spec = MetricSpec(
        name="wer",
        version="1",
        outputs=(
            OutputSpec(
                "wer", higher_is_better=False, valid_range=(0.0, None), unit="fraction",
                aggregation="ratio", ratio=("errors", "ref_words"), regression_threshold=0.005,
                description="corpus WER: summed word edits (S+D+I) / summed reference words "
                            "(per item: that item's WER)",
            ),
            OutputSpec(
                "wer_utt_mean", higher_is_better=False, valid_range=(0.0, None), unit="fraction",
                regression_threshold=0.005,
                description="mean of per-utterance WER (Seed-TTS-eval convention)",
            ),
        ),
        description="Word error rate of Whisper's transcript of the generated speech against "
                    "the intended text (ASR runs once per item, shared with cer).",
        **_COMMON,
    )


class CER(_ASRMetric):
    """Character error rate of the ASR transcript against the intended text."""

    unit = "char"
    length_field = "ref_chars"
    spec = MetricSpec(
        name="cer",
        version="1",
        outputs=(
            OutputSpec(
                "cer", higher_is_better=False, valid_range=(0.0, None), unit="fraction",
                aggregation="ratio", ratio=("errors", "ref_chars"), regression_threshold=0.003,
                description="corpus CER: summed character edits / summed reference characters "
                            "(spaces count; none for languages written without them)",
            ),
            OutputSpec(
                "cer_utt_mean", higher_is_better=False, valid_range=(0.0, None), unit="fraction",
                regression_threshold=0.003,
                description="mean of per-utterance CER (Seed-TTS-eval convention)",
            ),
        ),
        description="Character error rate of Whisper's transcript of the generated speech "
                    "against the intended text (ASR shared with wer).",
        **_COMMON,
    )
