"""openai-whisper backend with a tiny random-weight checkpoint in the official format
(``dims`` + ``model_state_dict``): loading, batched decoding equal to one-at-a-time decoding
(greedy and beam search), long-form inputs, and model resolution errors."""

from __future__ import annotations

import numpy as np
import pytest
from whisper_tiny import save_openai_checkpoint, tiny_whisper

from speechqe.asr import BackendConfig, load_backend
from speechqe.asr.backends import release_backends
from speechqe.asr.whisper_openai import OpenAIWhisperBackend, resolve_checkpoint
from speechqe.errors import ChecksumMismatchError, ConfigError

pytest.importorskip("whisper")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_openai_checkpoint(tiny_whisper(seed=3), tmp_path_factory.mktemp("w") / "tiny.pt")


def _signals(n=5, seed=0):
    """Speech-like test signals of different lengths (harmonic sweeps plus noise), 16 kHz."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        dur = 0.6 + 0.9 * k
        t = np.arange(int(dur * 16000)) / 16000
        f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t + k)
        x = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / 16000) / h for h in range(1, 6))
        out.append((0.1 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return out


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batched_decoding_equals_one_at_a_time(checkpoint, beam_size):
    audio = _signals()
    batched = OpenAIWhisperBackend(BackendConfig(
        backend="openai-whisper", model=str(checkpoint), beam_size=beam_size, batch_size=4))
    single = OpenAIWhisperBackend(BackendConfig(
        backend="openai-whisper", model=str(checkpoint), beam_size=beam_size, batch_size=1))
    hyps = batched.transcribe(audio)
    assert len(hyps) == len(audio)
    assert any(hyps)  # random weights still emit tokens: the comparison is not of empties
    assert hyps == single.transcribe(audio)
    assert hyps == [single.transcribe([a])[0] for a in audio]  # order-independent too
    assert hyps[::-1] == batched.transcribe(audio[::-1])


def test_long_input_is_decoded_window_by_window(checkpoint):
    """A 31 s input is decoded as two 30 s windows (the second starting past 30 s), not
    truncated to the first: the decoder is called once per window."""
    backend = OpenAIWhisperBackend(BackendConfig(
        backend="openai-whisper", model=str(checkpoint), beam_size=1, batch_size=2))
    long = np.tile(_signals(1)[0], 60)[: 16000 * 31]  # 31 s: more than one window
    windows = []
    decode = backend.model.decode

    def spy(mel, options):
        windows.append(tuple(mel.shape))
        return decode(mel, options)

    backend.model.decode = spy
    try:
        out = backend.transcribe([long])
    finally:
        backend.model.decode = decode
    assert len(out) == 1 and isinstance(out[0], str)
    assert len(windows) >= 2, windows


@pytest.mark.corpora
def test_long_input_transcribes_speech_past_30_seconds():
    """Real speech: LJ001-0001, -0003, -0004, -0006 (30.2 s), then LJ001-0005 from 30.2 s to
    38.3 s. The packaged tiny.en weights (converted to openai-whisper) must transcribe the
    words of that last sentence: truncation at 30 s would lose all of them."""
    from conftest import corpus

    from speechqe.audio import LoadedAudio
    from speechqe.encoders.whisper import converted_checkpoint

    wavs = corpus("ljspeech-32") / "wavs"
    parts = [LoadedAudio.from_file(wavs / f"LJ001-000{k}.wav").at(16000) for k in (1, 3, 4, 6, 5)]
    assert 30.0 < sum(p.size for p in parts[:4]) / 16000 < 30.5
    backend = OpenAIWhisperBackend(BackendConfig(
        backend="openai-whisper", model=str(converted_checkpoint("whisper-tiny.en-ct2")),
        beam_size=1))
    text = backend.transcribe([np.concatenate(parts)])[0].lower()
    tail = ["movable", "metal", "letters", "fifteenth", "century"]
    assert sum(w in text for w in tail) >= 4, text
    assert "printing" in text and "woodcutters" in text.replace("wood cutters", "woodcutters"), text


def test_model_id_names_backend_weights_and_settings(checkpoint):
    b = OpenAIWhisperBackend(BackendConfig(backend="openai-whisper", model=str(checkpoint),
                                           beam_size=2))
    assert b.model_id.startswith("openai-whisper:sha256-") and b.model_id.endswith(":en:beam2:fp32")
    assert b.cache_key().endswith(b.model_id)


def test_factory_shares_one_instance_per_configuration(checkpoint):
    release_backends()
    cfg = BackendConfig(backend="openai-whisper", model=str(checkpoint), beam_size=1)
    assert load_backend(cfg) is load_backend(BackendConfig(**vars(cfg)))
    release_backends()


def test_english_only_model_refuses_other_languages(checkpoint):
    with pytest.raises(ConfigError, match="English-only"):
        OpenAIWhisperBackend(BackendConfig(backend="openai-whisper", model=str(checkpoint),
                                           language="de"))


def test_fp16_is_refused_on_cpu(checkpoint):
    with pytest.raises(ConfigError, match="float16 only on a GPU"):
        OpenAIWhisperBackend(BackendConfig(backend="openai-whisper", model=str(checkpoint),
                                           compute_type="float16"))


def test_model_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ConfigError, match="unknown openai-whisper model"):
        resolve_checkpoint("gigantic")
    with pytest.raises(ConfigError, match="not found"):
        resolve_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="ctranslate2 model, not an openai-whisper"):
        resolve_checkpoint("whisper-tiny.en-ct2")
    # a size name or alias maps to its registered checkpoint, looked for in openai-whisper's
    # own cache and verified there (no network: a file of the wrong content is refused)
    (tmp_path / "xdg" / "whisper").mkdir(parents=True)
    (tmp_path / "xdg" / "whisper" / "large-v3-turbo.pt").write_bytes(b"not the checkpoint")
    with pytest.raises(ChecksumMismatchError, match="large-v3-turbo.pt"):
        resolve_checkpoint("turbo")
