"""DNSMOS, DistillMOS and PLCMOS: the packaged pretrained models (offline defaults), loaded from
sha256-verified assets, equal to their libraries' own pipelines; batching never changes a score.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import corpus
from metric_helpers import load_clip, make_input, score
from speechqe import assets, degrade
from speechqe.errors import ChecksumMismatchError, TooShortError
from speechqe import plugins
from speechqe.metrics.functional import dnsmos as dnsmos_core

pytest.importorskip("onnxruntime")
pytest.importorskip("speechmos")


@pytest.fixture(scope="module")
def signals() -> dict[str, np.ndarray]:
    """16 kHz test signals, few DNSMOS segments each (the model costs ~0.35 s per segment on one
    core): a 2.6 s clip (tiled to 10.3 s: 1 segment), 11.6 s of two clips (2 segments of
    9.01 s, one second apart) and a noisy 9.7 s clip (babble of two other clips at 5 dB)."""
    wavs = corpus("ljspeech-32") / "wavs"
    x16 = {k: load_clip(str(wavs / f"LJ001-00{k}.wav")).at(16000)
           for k in ("01", "03", "04", "05", "13")}
    babble = degrade.babble([x16["04"], x16["05"]], x16["01"].size, 1)
    noisy = degrade.add_noise(x16["01"], babble, 5.0)
    out = {"short": x16["13"], "long": np.concatenate([x16["01"], x16["03"][: 2 * 16000]]),
           "noisy": noisy}
    for v in out.values():
        assert np.abs(v).max() <= 1.0  # speechmos refuses arrays outside [-1, 1]
    return out


@pytest.fixture(scope="module")
def dnsmos_metric():
    m = plugins.create("dnsmos")
    m.ensure_ready()
    return m


@pytest.fixture(scope="module")
def dnsmos_batched(signals, dnsmos_metric):
    """The three signals scored in one batch (all segments in one ONNX call per model)."""
    inputs = [make_input(x, 16000, item_id=k) for k, x in signals.items()]
    return inputs, dnsmos_metric.score_batch(inputs)


# --- DNSMOS ---------------------------------------------------------------------------------
# Golden values, computed once with speechmos 0.0.1.1 (speechmos.dnsmos.run) on these arrays.
DNSMOS_GOLDEN = {
    "short": (3.550287526818422, 2.964412956219622, 2.6658561256373834, 4.098596096038818),
    "long": (3.616315894840426, 3.984297706843098, 3.3009217129940787, 4.14432430267334),
    "noisy": (3.3215780290284513, 1.7770808692638889, 1.873240649190322, 3.593686580657959),
}
KEYS = (("dnsmos_sig", "sig_mos"), ("dnsmos_bak", "bak_mos"), ("dnsmos_ovrl", "ovrl_mos"),
        ("dnsmos_p808", "p808_mos"))


def test_dnsmos_equals_speechmos_and_golden(signals, dnsmos_batched):
    from speechmos import dnsmos as speechmos_dnsmos

    _, results = dnsmos_batched
    for (name, x), res in zip(signals.items(), results):
        want = speechmos_dnsmos.run(x, 16000)
        for ours, theirs in KEYS:
            assert res.values[ours] == pytest.approx(float(want[theirs]), abs=1e-6), (name, ours)
        assert [res.values[k] for k, _ in KEYS] == pytest.approx(DNSMOS_GOLDEN[name], abs=1e-5)
    assert [r.extra["segments"] for r in results] == [1, 2, 1]


def test_dnsmos_batched_equals_single(dnsmos_batched, dnsmos_metric):
    inputs, batched = dnsmos_batched
    try:
        dnsmos_metric.max_batch = 1
        single = [dnsmos_metric.score_item(i) for i in inputs]
        dnsmos_metric.max_batch = 2  # segment batches that cut across items
        mixed = dnsmos_metric.score_batch(list(reversed(inputs)))[::-1]
        dnsmos_metric.max_batch = 16  # all segments of the three items in one call
        together = dnsmos_metric.score_batch(inputs)
    finally:
        dnsmos_metric.max_batch = type(dnsmos_metric).max_batch
    for b, s, m, t in zip(batched, single, mixed, together):
        for k, _ in KEYS:
            for other in (b, m, t):
                assert other.values[k] == pytest.approx(s.values[k], abs=1e-6)


def test_dnsmos_segmentation_follows_the_original():
    # 9.01 s needs 144160 samples; shorter clips are doubled until long enough
    assert dnsmos_core.segments(np.ones(144160, np.float32)).shape == (1, 144160)
    assert dnsmos_core.segments(np.ones(16000 * 3, np.float32)).shape[0] == 3  # 3 -> 6 -> 12 s
    # 20 s: 11 start seconds, but (i + 9.01) * 16000 rounds down one sample for i = 7..23, so
    # the original skips those segments as too short; we reproduce that
    assert dnsmos_core.segments(np.ones(16000 * 20, np.float32)).shape[0] == 7


def test_dnsmos_batch_keeps_item_errors_in_place(signals, dnsmos_metric):
    class Broken:
        """A ScoringInput whose audio cannot be produced (an item error while scoring)."""

        def signal(self, sr):
            raise TooShortError("broken on purpose")

    good = make_input(signals["short"], 16000)
    res = dnsmos_metric.score_batch([good, Broken(), good])
    assert isinstance(res[1], TooShortError)
    assert res[0].values == res[2].values


def test_dnsmos_batch_failure_is_retried_item_by_item(signals, dnsmos_metric, monkeypatch):
    """If one ONNX call fails, the items are scored one by one: the culprit gets an
    'unexpected' error with the original exception's type, the others their scores."""
    from speechqe.errors import UnexpectedItemError

    real = dnsmos_core.segments

    def fragile(x, *a, **k):
        if x.size == 16000 * 3:
            raise FloatingPointError("cannot segment this one")
        return real(x, *a, **k)

    monkeypatch.setattr(dnsmos_core, "segments", fragile)
    bad = make_input((0.1 * np.sin(np.arange(16000 * 3) / 5)).astype(np.float32), 16000)
    good = make_input(signals["short"], 16000)
    res = dnsmos_metric.score_batch([good, bad])
    assert isinstance(res[1], UnexpectedItemError) and "FloatingPointError" in str(res[1])
    assert res[0].values == dnsmos_metric.score_item(good).values


def test_dnsmos_contract_refuses_too_short():
    x = (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32)
    assert isinstance(score(plugins.create("dnsmos"), make_input(x, 16000)), TooShortError)


def _tampered_copy(asset_name: str, tmp_path, victim: str):
    src = assets.get(asset_name).path()
    for f in assets.get(asset_name).files:
        shutil.copy(src / f.name, tmp_path / f.name)
    with open(tmp_path / victim, "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return tmp_path


@pytest.mark.parametrize("name,asset,victim", [
    ("dnsmos", "dnsmos-p835", "model_v8.onnx"),
    ("distillmos", "distillmos-v7", "distill_mos_v7.pt"),
    ("plcmos", "plcmos-v2", "plcmos_v2.onnx"),
])
def test_model_files_are_verified_before_use(name, asset, victim, tmp_path):
    if name == "distillmos":
        pytest.importorskip("distillmos")
    folder = _tampered_copy(asset, tmp_path, victim)
    assets.set_override(asset, folder)
    try:
        with pytest.raises(ChecksumMismatchError, match=victim):
            plugins.create(name).ensure_ready()
    finally:
        assets.clear_overrides()


def test_model_ids_carry_the_asset_fingerprint():
    for name, asset in (("dnsmos", "dnsmos-p835"), ("distillmos", "distillmos-v7"),
                        ("plcmos", "plcmos-v2")):
        assert plugins.create(name).model_id().endswith(assets.get(asset).fingerprint())


# --- DistillMOS -----------------------------------------------------------------------------
# Golden values, computed once with distillmos 0.9.1's own ConvTransformerSQAModel() (which
# loads its packaged weights itself) on these arrays.
DISTILLMOS_GOLDEN = {"short": 3.4447357654571533, "noisy": 2.5097923278808594}


@pytest.fixture(scope="module")
def reference_distillmos():
    pytest.importorskip("distillmos")
    import distillmos

    model = distillmos.ConvTransformerSQAModel()
    return model.eval()


def test_distillmos_equals_library_and_golden(signals, reference_distillmos):
    import torch

    metric = plugins.create("distillmos")
    for name in ("short", "noisy"):
        x = signals[name]
        res = score(metric, make_input(x, 16000))
        with torch.no_grad():
            want = reference_distillmos(torch.from_numpy(x)[None]).item()
        assert res.values["distillmos"] == pytest.approx(want, abs=1e-6)
        assert res.values["distillmos"] == pytest.approx(DISTILLMOS_GOLDEN[name], abs=1e-5)


def test_distillmos_loads_a_random_state_dict_in_the_real_format(signals, tmp_path):
    """The loader path (architecture built without weights, then a ``{'model': state_dict}``
    checkpoint, weights_only) on a random-initialised model saved in the real format."""
    import distillmos
    import torch

    from speechqe.metrics.distillmos import load_model

    torch.manual_seed(0)
    rand = distillmos.ConvTransformerSQAModel(load_weights=False)
    torch.save({"model": rand.state_dict(), "step": 0}, tmp_path / "random.pt")
    loaded = load_model(tmp_path / "random.pt")
    x = torch.from_numpy(signals["short"])[None]
    with torch.no_grad():
        assert loaded(x).item() == pytest.approx(rand.eval()(x).item(), abs=1e-6)
    # a state dict of another architecture is refused (strict loading)
    torch.save({"model": {"bogus": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model(tmp_path / "bad.pt")


@pytest.mark.gpu
def test_dnsmos_cuda_equals_cpu(signals):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider")
    inputs = [make_input(x, 16000, item_id=k) for k, x in signals.items()]
    cpu = plugins.create("dnsmos", device="cpu").score_batch(inputs)
    gpu = plugins.create("dnsmos", device="cuda").score_batch(inputs)
    for c, g in zip(cpu, gpu):
        for k, _ in KEYS:
            assert g.values[k] == pytest.approx(c.values[k], abs=1e-3)


@pytest.mark.gpu
def test_distillmos_cuda_equals_cpu(signals):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = plugins.create("distillmos", device="cpu")
    gpu = plugins.create("distillmos", device="cuda")
    for x in signals.values():
        inp = make_input(x, 16000)
        assert score(gpu, inp).values["distillmos"] == pytest.approx(
            score(cpu, inp).values["distillmos"], abs=1e-3)


# --- PLCMOS ---------------------------------------------------------------------------------
def test_plcmos_equals_speechmos_with_the_same_seed_and_is_deterministic(signals):
    from speechmos import plcmos as speechmos_plcmos

    metric = plugins.create("plcmos")
    for name in ("short", "noisy"):
        x = signals[name]
        np.random.seed(0)  # the original draws its rater embeddings from the global RNG
        want = speechmos_plcmos.run(x, 16000)["plcmos"]
        got = score(metric, make_input(x, 16000)).values["plcmos"]
        assert got == pytest.approx(want, abs=1e-6)
        assert score(metric, make_input(x, 16000)).values["plcmos"] == got
