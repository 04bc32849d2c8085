"""Long inputs read window by window: the same samples (and resampled samples) as decoding
the whole file, the same validation errors, and DNSMOS over windows equal to DNSMOS on the
decoded signal, with a bounded number of segments in memory."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechqe.audio import LoadedAudio, read, resample
from speechqe.errors import NonFiniteAudioError, SilentAudioError, TooLongError
from speechqe.streaming import StreamedAudio


def _write(path, seconds, sr, channels=1, seed=0, subtype="FLOAT"):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.05 * rng.standard_normal(x.size)
    data = np.stack([x, 0.7 * x], axis=1) if channels == 2 else x
    sf.write(path, data.astype(np.float32), sr, subtype=subtype)
    return path


@pytest.mark.parametrize("sr,channels", [(16000, 1), (22050, 1), (44100, 2), (48000, 1)])
def test_windows_equal_the_decoded_signal_at_every_rate(tmp_path, sr, channels):
    p = _write(tmp_path / "a.wav", 7.3, sr, channels)
    s = StreamedAudio.open(p)
    full, native = read(p)
    assert (s.sample_rate, s.frames, s.channels) == (native, full.size, channels)
    assert s.check == LoadedAudio.from_array(full, sr).check
    for rate in sorted({sr, 16000, 10000}):
        y = resample(full, sr, rate)
        assert s.length_at(rate) == y.size
        for a, b in ((0, 1000), (12345, 40000), (y.size - 5000, y.size), (y.size - 10, y.size + 99)):
            w = s.read(a, b, rate)
            np.testing.assert_allclose(w, y[a:min(b, y.size)], rtol=0, atol=3e-7)
            if rate == sr:  # no resampling: bit-identical
                assert np.array_equal(w, y[a:min(b, y.size)])


def test_whole_signal_requests_are_refused_with_too_long(tmp_path):
    s = StreamedAudio.open(_write(tmp_path / "a.wav", 1.0, 16000))
    with pytest.raises(TooLongError, match="window by window"):
        s.at(16000)
    with pytest.raises(TooLongError):
        s.samples  # noqa: B018


def test_streamed_validation_gives_the_decoders_errors(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(48000, np.float32), 16000)
    with pytest.raises(SilentAudioError):
        StreamedAudio.open(tmp_path / "silent.wav")
    x = np.full(48000, 0.1, np.float32)
    x[40000] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match="1 of 48000"):
        StreamedAudio.open(tmp_path / "nan.wav")


def test_dnsmos_over_streamed_windows_equals_the_decoded_path(tmp_path):
    """A 44.1 kHz file of 12.5 s scored through StreamedAudio (windows read from the file and
    resampled with their context) equals the same file decoded whole."""
    from speechqe import plugins
    from speechqe.manifest import AudioItem
    from speechqe.metric import ScoringInput

    p = _write(tmp_path / "long.wav", 12.5, 44100, seed=3, subtype="PCM_16")
    item = AudioItem(id="long", path=str(p), system="s")
    metric = plugins.create("dnsmos")
    metric.ensure_ready()
    decoded = metric.score_item(ScoringInput(item=item, audio=LoadedAudio.from_file(p)))
    streamed = metric.score_item(ScoringInput(item=item, audio=StreamedAudio.open(p)))
    assert streamed.extra["segments"] == decoded.extra["segments"] == 3
    for k, v in decoded.values.items():
        assert streamed.values[k] == pytest.approx(v, abs=1e-5), k


def test_dnsmos_windows_hold_one_group_of_segments_at_a_time(monkeypatch):
    """The windowed core gives the decoded core's numbers exactly (16 kHz, no resampling)
    while no model call or feature batch holds more than one group of segments: memory is
    bounded by the group, whatever the length (the rule the long-file test relies on)."""
    from speechqe import plugins
    from speechqe.metrics.functional import dnsmos as F

    rng = np.random.default_rng(0)
    t = np.arange(int(13.2 * 16000)) / 16000
    x = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    metric = plugins.create("dnsmos")
    metric.ensure_ready()
    whole = F.dnsmos([x], metric._primary, metric._p808, max_batch=1)[0]
    seen = []
    run = F._run

    def spy(session, batch, max_batch):
        seen.append(batch.shape[0])
        return run(session, batch, max_batch)

    monkeypatch.setattr(F, "_run", spy)
    win = F.dnsmos_windows(lambda a, b: x[a:b], x.size, metric._primary, metric._p808,
                           max_batch=1, group=2)
    assert win == whole and win.segments == 4
    assert max(seen) == 2 and len(seen) == 4  # 2 groups x (P.835 + P.808)
