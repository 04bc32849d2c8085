"""The k-means tokenizer core: dedup, entropy and bitrate, codebook files, assignment,
mini-batch k-means (torch vs scikit-learn), unit files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from speechqe.errors import ConfigError
from speechqe.vocoders.units import (
    Codebook,
    KMeansConfig,
    UnitRecord,
    bitrate_report,
    deduplicate,
    entropy_bits,
    expand,
    fit_kmeans,
    read_units,
    write_units,
)


def test_deduplicate_keeps_durations():
    u, d = deduplicate(np.array([3, 3, 3, 1, 7, 7, 3]))
    assert u.tolist() == [3, 1, 7, 3] and d.tolist() == [3, 1, 2, 1]
    assert expand(u, d).tolist() == [3, 3, 3, 1, 7, 7, 3]
    e, de = deduplicate(np.array([], dtype=np.int64))
    assert e.size == 0 and de.size == 0


def test_entropy_and_bitrate_by_hand():
    assert entropy_bits([0, 1, 2, 3] * 5) == pytest.approx(2.0)
    assert entropy_bits([5] * 9) == 0.0
    # 50 Hz, K=16: nominal 200 bps. Frames: 0,0,1,1,2,2,3,3 (2 s of 100 frames)
    seq = np.repeat([0, 1, 2, 3], 2)
    r = bitrate_report([seq] * 12 + [np.array([0, 0, 1, 1])], frame_rate=50, k=16)
    assert r.nominal_bps == pytest.approx(50 * 4)
    assert r.frames == 100 and r.seconds == pytest.approx(2.0)
    # frame units: 26 each of 0 and 1, 24 each of 2 and 3
    p = np.array([26, 26, 24, 24]) / 100
    assert r.entropy_bits == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert r.empirical_bps == pytest.approx(50 * r.entropy_bits)
    # dedup: 50 tokens in 2 s; every run lasts 2 frames (duration entropy 0)
    assert r.dedup_tokens_per_s == pytest.approx(25.0)
    assert r.duration_entropy_bits == 0.0
    assert r.dedup_bps == pytest.approx(25.0 * r.dedup_entropy_bits)
    assert r.dedup_with_durations_bps == pytest.approx(r.dedup_bps)
    with pytest.raises(ConfigError, match="outside"):
        bitrate_report([np.array([0, 16])], 50, 16)
    with pytest.raises(ConfigError, match="no unit frames"):
        bitrate_report([np.array([], dtype=np.int64)], 50, 16)


def _codebook(k=5, dim=3, seed=0):
    c = np.random.default_rng(seed).standard_normal((k, dim)).astype(np.float32)
    return Codebook(centroids=c, encoder="whisper-ct2:x:abc", layer=4, frame_rate=50.0,
                    sample_rate=16000, info={"inertia": 1.5})


def test_codebook_roundtrip_without_pickle(tmp_path):
    cb = _codebook()
    path = cb.save(tmp_path / "cb")
    assert path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        header = json.loads(str(z["header"]))
    assert header["encoder"] == "whisper-ct2:x:abc" and header["layer"] == 4
    assert header["frame_rate"] == 50.0 and header["k"] == 5
    back = Codebook.load(path)
    np.testing.assert_array_equal(back.centroids, cb.centroids)
    assert (back.encoder, back.layer, back.frame_rate, back.sample_rate) == \
        (cb.encoder, cb.layer, cb.frame_rate, cb.sample_rate)
    assert back.fingerprint() == cb.fingerprint()
    assert back.nominal_bitrate == pytest.approx(50 * math.log2(5))
    # altered centroids are detected by the fingerprint
    np.savez(tmp_path / "bad.npz", centroids=cb.centroids + 1, header=np.array(json.dumps(header)))
    with pytest.raises(ConfigError, match="fingerprint"):
        Codebook.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a speechqe codebook"):
        Codebook.load(tmp_path / "junk.npz")
    with pytest.raises(ConfigError, match="not found"):
        Codebook.load(tmp_path / "missing.npz")


def test_assign_is_brute_force_nearest():
    cb = _codebook(k=7, dim=4)
    x = np.random.default_rng(1).standard_normal((1000, 4)).astype(np.float32)
    want = np.argmin(((x[:, None, :] - cb.centroids[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(cb.assign(x, chunk=128), want)
    with pytest.raises(ConfigError, match="dim"):
        cb.assign(x[:, :3])


def _blobs(n_per=400, k=6, dim=8, seed=0):
    g = np.random.default_rng(seed)
    mu = g.standard_normal((k, dim)).astype(np.float32) * 6
    x = np.concatenate([m + 0.3 * g.standard_normal((n_per, dim)) for m in mu]).astype(np.float32)
    return x[g.permutation(x.shape[0])], mu


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_minibatch_kmeans_recovers_blobs_from_a_stream(backend):
    x, mu = _blobs()

    def stream():  # chunks of uneven size, re-read each epoch
        for s in range(0, x.shape[0], 170):
            yield x[s:s + 170]

    cfg = KMeansConfig(k=6, batch_size=256, epochs=4, backend=backend, seed=0)
    c, info = fit_kmeans(stream, cfg)
    assert c.shape == (6, 8) and info["backend"] == backend
    assert info["frames"] == x.shape[0] and info["empty"] == 0
    # every true centre has a centroid within the noise radius
    d = np.sqrt(((mu[:, None] - c[None]) ** 2).sum(-1)).min(1)
    assert (d < 0.3).all(), d
    assert info["inertia"] == pytest.approx(8 * 0.3**2, rel=0.15)


def test_torch_and_sklearn_backends_agree():
    x, _ = _blobs(n_per=300, k=10, dim=6, seed=2)
    res = {}
    for backend in ("torch", "sklearn"):
        _, info = fit_kmeans(lambda: [x], KMeansConfig(k=10, batch_size=500, epochs=3,
                                                        backend=backend, seed=3))
        res[backend] = info["inertia"]
    assert res["torch"] == pytest.approx(res["sklearn"], rel=0.02)


def test_kmeans_refuses_too_little_data():
    with pytest.raises(ConfigError, match="too few"):
        fit_kmeans(lambda: [np.zeros((3, 2), np.float32)], KMeansConfig(k=5))
    with pytest.raises(ConfigError, match="empty"):
        fit_kmeans(lambda: [], KMeansConfig(k=5))
    with pytest.raises(ConfigError):
        KMeansConfig(k=1)


def test_units_file_roundtrip(tmp_path):
    cb = _codebook()
    u, d = deduplicate(np.array([1, 1, 2, 4, 4, 4]))
    recs = [UnitRecord(id="a", path="/x/a.wav", sha256="00", units=u, durations=d, frames=6,
                       text="hello"),
            UnitRecord(id="b/c", path="/x/b.wav", sha256="11", units=np.array([0, 3]),
                       durations=None, frames=2)]
    write_units(tmp_path / "u.jsonl", recs, cb, dedup=True)
    header, back = read_units(tmp_path / "u.jsonl")
    assert header["codebook"] == cb.fingerprint() and header["k"] == 5
    assert back[0].frame_units().tolist() == [1, 1, 2, 4, 4, 4]
    assert back[0].text == "hello" and back[1].durations is None
    assert back[1].units.tolist() == [0, 3]
