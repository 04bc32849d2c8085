"""Speaker similarity: does the generated speech sound like the target speaker?

``speaker_sim`` is the cosine similarity between the speaker embedding of each generated
utterance and that of its speaker prompt (``prompt_path`` of the item: zero-shot TTS, voice
conversion target) or, when it has none, its reference. Encoders: Resemblyzer GE2E (default,
offline) or SpeechBrain ECAPA-TDNN (see :mod:`speechqe.speaker.encoders`).

Input below 16 kHz is refused. Both encoders work at 16 kHz, so a signal recorded at 8 kHz
(telephone, some codecs) would be upsampled and lack the 4-8 kHz band that the encoders were
trained with; its similarity to a wide-band prompt then drops for reasons unrelated to speaker
identity (a known pitfall of tools that silently resample). Such items get a ``sample_rate``
error unless ``allow_low_sample_rate`` is set, for example to compare narrow-band systems with
each other.

The embedding of a prompt or reference shared by many items (one prompt per speaker, several
systems) is computed once per process (keyed by its content hash).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from speechqe.errors import (
    MetricComputationError,
    MissingReferenceError,
    SampleRateError,
)
from speechqe.speaker.encoders import SAMPLE_RATE, EncoderConfig, SpeakerEncoderOptions

from speechqe.metric import (
    ItemScore,
    Metric,
    MetricSpec,
    OutputSpec,
    ScoringInput,
    n_samples,
    params_id,
)

def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"
_CACHE_SIZE = 4096


class SpeakerSimParams(SpeakerEncoderOptions):
    """Parameters of ``speaker_sim``: the encoder settings of
    :class:`speechqe.speaker.encoders.SpeakerEncoderOptions` (backend, model, vad_trim, trust_code; their
    defaults live there) and:

    Attributes:
        allow_low_sample_rate: score items whose generated, prompt or reference audio is
            natively below 16 kHz (upsampled) instead of refusing them.

    (``trust_code``, inherited, lets a local model load even where loading it could run code;
    see :mod:`speechqe.speaker.encoders`.)
    """

    allow_low_sample_rate: bool = False

    def encoder_config(self, device: str) -> EncoderConfig:
        return EncoderConfig(device=device, **self.encoder_options())


class SpeakerSim(Metric):
    """Cosine similarity of speaker embeddings, generated vs prompt (or reference)."""

    Params = SpeakerSimParams
    positional = "model"
    spec = MetricSpec(
        name="speaker_sim",
        version="1",
        outputs=(
            OutputSpec(
                "speaker_sim", higher_is_better=True, valid_range=(-1.0, 1.0), unit="cosine",
                regression_threshold=0.01,
                description="cosine similarity of the speaker embeddings of the generated "
                            "utterance and its speaker prompt (else its reference)",
            ),
        ),
        sample_rate=SAMPLE_RATE,
        needs_reference=True,
        prompt_as_reference=True,
        device="cuda",
        batched=False,  # one utterance at a time: padding would change embeddings
        min_duration=0.5,
        max_duration=300.0,
        length_rule="whole utterance (Resemblyzer: 1.6 s partials in one batch; ECAPA: the "
                    "full signal); refused above 300 s (signal, prompt or reference)",
        kind="speaker",
        description="Speaker similarity to the prompt or reference (Resemblyzer GE2E or "
                    "SpeechBrain ECAPA-TDNN embeddings); refuses audio natively below 16 kHz.",
        core="speechqe.speaker",
        source="Resemblyzer (Wan et al. 2018, GE2E); SpeechBrain spkrec-ecapa-voxceleb "
               "(Desplanques et al. 2020)",
        licence="Apache-2.0",
        extra="models",
    )

    def setup(self) -> None:
        from speechqe.speaker import load_encoder

        self.encoder = load_encoder(self.params.encoder_config(self.device))
        self._target_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def model_id(self) -> str:
        self.ensure_ready()
        return f"{params_id(self.params)}|{self.encoder.model_id}"

    # --- input contract -----------------------------------------------------------------------
    @staticmethod
    def target(inp: ScoringInput):
        """``(signal, 'prompt' | 'reference', content hash)`` of the speaker target."""
        if inp.prompt is not None:
            return inp.prompt, "prompt", inp.item.prompt_sha256
        if inp.ref is not None:
            return inp.ref, "reference", inp.item.ref_sha256
        raise MissingReferenceError(
            "speaker_sim needs a speaker prompt or a reference; none was matched for this item"
        )

    def check_input(self, inp: ScoringInput) -> None:
        target, which, _ = self.target(inp)
        from speechqe.audio import check_duration

        check_duration(n_samples(inp.audio), inp.audio.sample_rate, self.spec.min_duration,
                       self.spec.name)
        check_duration(n_samples(target), target.sample_rate, self.spec.min_duration,
                       f"{self.spec.name} ({which})")
        self.check_length(inp)
        if not self.params.allow_low_sample_rate:
            for what, audio in (("the generated audio", inp.audio), (f"the {which}", target)):
                if audio.sample_rate < SAMPLE_RATE:
                    raise SampleRateError(
                        f"{what} is natively {audio.sample_rate} Hz; speaker embeddings are "
                        f"computed at {SAMPLE_RATE} Hz, and upsampled narrow-band audio lacks "
                        "the band above "
                        f"{audio.sample_rate // 2000} kHz, which lowers similarity for reasons "
                        "unrelated to the speaker. Set allow_low_sample_rate=true "
                        "(--param speaker_sim.allow_low_sample_rate=true) to score it anyway."
                    )

    # --- scoring ------------------------------------------------------------------------------
    def _target_embedding(self, inp: ScoringInput) -> tuple[np.ndarray, str]:
        """The prompt's or reference's embedding: from this process's cache, else from the
        run's analysis cache (shared by the systems of a run and by later runs, keyed by the
        file's content hash and the encoder's id), else computed."""
        target, which, sha = self.target(inp)
        key = sha or f"id:{inp.item.id}:{which}"
        emb = self._target_cache.get(key)
        if emb is None:
            settings = {"analysis": "speaker-embedding-1", "encoder": self.encoder.model_id,
                        "rate": SAMPLE_RATE}
            if target.sample_rate != SAMPLE_RATE:
                settings["resampler"] = f"torchaudio-{_version('torchaudio')}"
            emb = inp.persistent("speaker-embedding", sha, settings,
                                 lambda: {"embedding": self.encoder.embed(target.at(SAMPLE_RATE))}
                                 )["embedding"]
            self._target_cache[key] = emb
            if len(self._target_cache) > _CACHE_SIZE:
                self._target_cache.popitem(last=False)
        else:
            self._target_cache.move_to_end(key)
        return emb, which

    def score_item(self, inp: ScoringInput) -> ItemScore:
        from speechqe.speaker import cosine_similarity

        self.ensure_ready()
        self.check_input(inp)
        key = f"speaker-embedding:{self.encoder.model_id}"
        try:  # a zero or non-finite embedding is this item's failure, not a bug
            gen = inp.cached(key, lambda: self.encoder.embed(inp.signal(SAMPLE_RATE)))
            target, which = self._target_embedding(inp)
            sim = cosine_similarity(gen, target)
        except ValueError as exc:
            raise MetricComputationError(str(exc)) from exc
        return ItemScore(
            values={"speaker_sim": sim},
            extra={"target": which, "encoder": self.encoder.model_id},
        )

