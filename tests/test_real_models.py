"""Pretrained checkpoints that are not shipped in a wheel (the `real_model` marker).

Each test runs when its asset is present on this machine (downloaded with `speechqe models
fetch NAME`, or pointed at with `SPEECHQE_ASSET_<NAME>=PATH`) and skips with that instruction
otherwise; `pytest -m real_model` runs only these. They check that the real weights load
through our loaders and behave as published on real speech, which the tiny random-weight
models of the other tests cannot show.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import corpus

from speechqe import assets

pytestmark = [pytest.mark.real_model, pytest.mark.corpora]


def _need(name: str) -> None:
    asset = assets.get(name)
    if not asset.is_present():
        pytest.skip(f"pretrained asset {name!r} is not on this machine: run "
                    f"'speechqe models fetch {name}' or set {asset.env_var}=PATH")


def _lj(n: int) -> list[tuple[str, np.ndarray]]:
    from speechqe.audio import LoadedAudio

    wavs = sorted((corpus("ljspeech-32") / "wavs").glob("*.wav"))[:n]
    return [(p.stem, LoadedAudio.from_file(p).at(16000)) for p in wavs]


def test_utmos22_strong_ranks_clean_above_noisy_speech():
    """UTMOS22 (Saeki et al. 2022) through `utmos_strong`: clean LJSpeech above the same clips
    at 0 dB white noise for at least 9 of 10, every prediction on the 1-5 scale."""
    _need("utmos22-strong")
    from speechqe import plugins
    from speechqe.audio import LoadedAudio
    from speechqe.degrade import add_noise, white_noise
    from speechqe.manifest import AudioItem
    from speechqe.metric import ScoringInput

    metric = plugins.create("utmos_strong")
    metric.ensure_ready()
    clips = _lj(10)

    def score(x, i):
        inp = ScoringInput(item=AudioItem(id=f"u{i}", path="", system="s"),
                           audio=LoadedAudio.from_array(x.astype(np.float32), 16000))
        return metric.score_item(inp).values["utmos_strong"]

    clean = [score(x, i) for i, (_, x) in enumerate(clips)]
    noisy = [score(add_noise(x, white_noise(x.size, seed=i), snr_db=0.0), i)
             for i, (_, x) in enumerate(clips)]
    assert all(1.0 <= v <= 5.0 for v in clean + noisy)
    assert sum(c > n for c, n in zip(clean, noisy)) >= 9, (clean, noisy)


def test_openai_whisper_large_v3_transcribes_ljspeech():
    """openai-whisper large-v3 on the 32 LJSpeech clips: corpus WER under 5% (tiny.en: 7%)."""
    _need("openai-whisper-large-v3")
    from speechqe.asr import BackendConfig, count_edits, get_normalizer, load_backend

    refs = dict(line.split("\t", 1) for line in
                (corpus("ljspeech-32") / "transcripts.tsv").read_text().splitlines() if line)
    backend = load_backend(BackendConfig(backend="openai-whisper",
                                         model="openai-whisper-large-v3", beam_size=5))
    clips = _lj(32)
    hyps = backend.transcribe([x for _, x in clips])
    norm = get_normalizer("auto", "en")
    edits = words = 0
    for (name, _), hyp in zip(clips, hyps):
        e = count_edits(norm(refs[name]), norm(hyp), unit="word")
        edits += e.substitutions + e.deletions + e.insertions
        words += e.ref_len
    assert edits / words < 0.05


def test_ecapa_separates_speakers():
    """SpeechBrain ECAPA-TDNN (VoxCeleb) on LibriSpeech test-other, 10 speakers x 10 utterances:
    EER under 2% (published: ~1% on VoxCeleb1-O)."""
    _need("speechbrain-spkrec-ecapa-voxceleb")
    from speechqe.audio import LoadedAudio
    from speechqe.speaker import EncoderConfig, eer, load_encoder, trial_scores

    enc = load_encoder(EncoderConfig(backend="speechbrain-ecapa"))
    embs, spk = [], []
    for d in sorted(p for p in corpus("librispeech-test-other-spk").iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.flac"))[:10]:
            embs.append(enc.embed(LoadedAudio.from_file(f).at(16000)))
            spk.append(d.name)
    scores, labels = trial_scores(np.stack(embs), spk)
    assert eer(scores, labels).eer < 0.02


@pytest.mark.parametrize("name, dim", [("ssl-wav2vec2-base", 768), ("ssl-wavlm-base-plus", 768),
                                       ("ssl-hubert-base", 768)])
def test_ssl_bundles_give_speech_features(name, dim):
    """A torchaudio SSL bundle loads through our loader (checksum pinned on first use) and gives
    50 frames/s of `dim`-d finite, non-constant features in every layer."""
    _need(name)
    from speechqe.encoders import load_encoder

    enc = load_encoder({"kind": "ssl", "source": name})
    (_, x), = _lj(1)
    feats = enc.encode([x[: 16000 * 4]])[0]
    assert feats.shape[1] in (199, 200) and feats.shape[2] == dim
    assert np.isfinite(feats).all() and feats[-1].std() > 0.05
