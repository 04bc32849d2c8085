"""The wer/cer adapters: parameters, per-item errors, model ids, the no-space language path."""

from __future__ import annotations

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
    with pytest.raises(ConfigError, match="unknown ASR backend"):
        plugins.create("wer", {"backend": "kaldi"})
    with pytest.raises(ConfigError, match="normalizer"):
        plugins.create("cer", {"normalizer": "fancy"})
    with pytest.raises(ConfigError, match="unknown parameter"):
        plugins.create("wer", {"beam": 3})
    with pytest.raises(ConfigError, match="beam_size"):
        plugins.create("wer", {"beam_size": 0})
    m = plugins.create("wer:/some/model.pt", {"backend": "openai-whisper"})
    assert m.params.model == "/some/model.pt"


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
