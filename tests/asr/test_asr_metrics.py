"""The wer/cer adapters: parameters, per-item errors, model ids, the no-space language path."""

from __future__ import annotations

import re

import numpy as np
import pytest
from whisper_tiny import save_openai_checkpoint, tiny_whisper

from speechqe.audio import LoadedAudio
from speechqe.errors import ConfigError, MissingTextError
from speechqe.manifest import AudioItem
from speechqe import plugins
from speechqe.metric import ScoringInput


def _inp(text, seconds=1.0, seed=0):
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32)
    item = AudioItem(id=f"u{seed}", path=f"/nowhere/u{seed}.wav", system="s", text=text)
    return ScoringInput(item=item, audio=LoadedAudio.from_array(x, 16000))


def test_parameters_are_validated_at_creation():
    with pytest.raises(ConfigError, match=re.escape(
            "metric 'wer': backend: Input should be 'faster-whisper' or 'openai-whisper' (got 'kaldi')")):
        plugins.create("wer", {"backend": "kaldi"})
    with pytest.raises(ConfigError, match=re.escape(
            "normalizer: Input should be 'auto', 'whisper-english', 'basic' or 'none' (got 'fancy')")):
        plugins.create("cer", {"normalizer": "fancy"})
    with pytest.raises(ConfigError, match="unknown parameter 'beam' \\(known: backend, model, "):
        plugins.create("wer", {"beam": 3})
    with pytest.raises(ConfigError, match=re.escape("beam_size: Input should be greater than or equal to 1 (got 0)")):
        plugins.create("wer", {"beam_size": 0})
    with pytest.raises(ConfigError, match=re.escape("language: language must be an ISO 639-1 code such as 'en' (got 'e1')")):
        plugins.create("wer", {"language": "e1"})
    m = plugins.create("wer:/some/model.pt", {"backend": "openai-whisper"})
    assert m.params.model == "/some/model.pt"
    # strings from the command line are read by type; 'no' stays a language code (a YAML
    # reading would have made it False)
    p = plugins.create("wer", {"beam_size": "3", "batch_size": "8.0", "language": "no"}).params
    assert (p.beam_size, p.batch_size, p.language) == (3, 8, "no")


def test_backend_config_is_typed_and_shares_its_defaults_with_the_metric():
    """BackendConfig and the wer/cer parameters share one set of defaults (ASROptions); the
    metric's backend config equals one built directly; bad values name key and value."""
    from speechqe.asr import BackendConfig
    from speechqe.asr.base import ASROptions
    from speechqe.config import validate

    p = plugins.create("wer", {"beam_size": 2}).params
    assert p.backend_config("cuda:1") == BackendConfig(beam_size=2, device="cuda:1")
    assert {k: v.default for k, v in ASROptions.model_fields.items()} == {
        k: getattr(BackendConfig(), k) for k in ASROptions.model_fields}
    cfg = BackendConfig(backend="openai-whisper", model="tiny.en", batch_size=4)
    assert validate(BackendConfig, cfg.model_dump()) == cfg and hash(cfg) == hash(BackendConfig(**cfg.model_dump()))
    with pytest.raises(ConfigError, match=re.escape("BackendConfig: device: device must be cpu, cuda or cuda:N (got 'auto')")):
        BackendConfig(device="auto")
    with pytest.raises(ConfigError, match=re.escape("asr.yaml: unknown key 'beam' (known: backend, model, language")):
        validate(BackendConfig, {"beam": 1}, "asr.yaml")
    with pytest.raises(ConfigError, match=re.escape("asr.yaml: batch_size: Input should be a valid integer")):
        validate(BackendConfig, {"batch_size": "many"}, "asr.yaml")


def test_contract():
    wer, cer = plugins.get("wer").spec, plugins.get("cer").spec
    assert wer.needs_text and wer.sample_rate == 16000 and wer.device == "cuda" and wer.batched
    assert wer.output("wer").aggregation == "ratio" and wer.output("wer").ratio == ("errors", "ref_words")
    assert wer.output("wer_utt_mean").aggregation == "mean"
    assert cer.output("cer").ratio == ("errors", "ref_chars")
    assert not wer.output("wer").higher_is_better


def test_missing_or_empty_text_is_a_per_item_error():
    m = plugins.create("wer")
    ok, no_text, only_punct = _inp("hello there", seed=1), _inp(None, seed=2), _inp("?!", seed=3)
    res = m.score_batch([ok, no_text, only_punct])
    assert len(res) == 3
    assert not isinstance(res[0], Exception)
    assert isinstance(res[1], MissingTextError)
    assert isinstance(res[2], MissingTextError) and "empty after" in str(res[2])
    with pytest.raises(MissingTextError):
        m.check_input(no_text)


def test_model_id_holds_the_weights_checksum_and_settings():
    m = plugins.create("wer", {"beam_size": 2})
    mid = m.model_id()
    assert "whisper-tiny.en-ct2@" in mid and ":beam2:int8" in mid and "norm:whisper-english" in mid
    assert mid != plugins.create("wer").model_id()
    cer, wer = plugins.create("cer"), plugins.create("wer")
    cer.ensure_ready()
    wer.ensure_ready()
    assert cer.backend is wer.backend and cer.backend.cache_key() == wer.backend.cache_key()


def test_english_only_default_refuses_other_languages():
    m = plugins.create("wer", {"language": "de"})
    with pytest.raises(ConfigError, match="English-only"):
        m.ensure_ready()


def test_languages_without_spaces_use_characters(tmp_path):
    """A multilingual (random-weight, official format) checkpoint accepts language='zh'; the
    word rate is then computed on characters, equal to CER."""
    ckpt = save_openai_checkpoint(tiny_whisper(seed=5, n_vocab=51865), tmp_path / "ml.pt")
    params = {"backend": "openai-whisper", "model": str(ckpt), "language": "zh", "beam_size": 1}
    wer, cer = plugins.create("wer", params), plugins.create("cer", params)
    w = wer.score_hypothesis("我爱你，中国！", "我 爱 他 中国")
    c = cer.score_hypothesis("我爱你，中国！", "我 爱 他 中国")
    assert w.extra["unit"] == "char" and w.extra["normalizer"] == "basic"
    assert (w.extra["hits"], w.extra["substitutions"], w.extra["ref_words"]) == (4, 1, 5)
    assert w.values["wer"] == pytest.approx(0.2) == c.values["cer"]
