"""The metric contracts as data: every metric the suites reference is registered with a
coherent spec, model-based ones are keyed by their weights, nothing heavy is imported to list
them, and parameters are validated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from speechqe.errors import ConfigError
from speechqe import plugins

EXPECTED = {
    "pesq": ("pesq",),
    "pesq_nb": ("pesq_nb",),
    "stoi": ("stoi",),
    "estoi": ("estoi",),
    "si_sdr": ("si_sdr",),
    "mcd": ("mcd",),
    "f0": ("f0_rmse_cents", "f0_corr", "vuv_error", "f0_gpe"),
    "lsd": ("lsd",),
    "dnsmos": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"),
    "distillmos": ("distillmos",),
    "plcmos": ("plcmos",),
}
INTRUSIVE = {"pesq", "pesq_nb", "stoi", "estoi", "si_sdr", "mcd", "f0", "lsd"}
RATES = {"pesq": 16000, "pesq_nb": 8000, "stoi": None, "estoi": None, "si_sdr": 16000,
         "mcd": 16000, "f0": 16000, "lsd": None, "dnsmos": 16000, "distillmos": 16000,
         "plcmos": 16000}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_with_a_coherent_spec(name):
    cls = plugins.get(name)
    spec = cls.spec
    assert spec.name == name
    assert spec.output_names == EXPECTED[name]
    assert spec.sample_rate == RATES[name]
    assert spec.needs_reference == (name in INTRUSIVE)
    assert spec.kind == ("intrusive" if name in INTRUSIVE else "non-intrusive")
    assert not spec.needs_text
    assert spec.source and spec.licence and spec.description and spec.version
    for out in spec.outputs:
        assert out.aggregation == "mean"
        assert out.higher_is_better is not None
        lo, hi = out.valid_range
        assert lo is None or hi is None or lo < hi
    assert spec.extra == ("models" if name in {"dnsmos", "distillmos", "plcmos"} else "")
    assert spec.batched == (name == "dnsmos")


@pytest.mark.parametrize("name", sorted(EXPECTED) + ["wer", "cer", "speaker_sim"])
def test_every_metric_declares_its_length_rule(name):
    """A maximum duration (refused before decoding) or none with a windowed rule; a finite
    maximum never exceeds the length above which inputs are streamed, so whatever a metric
    with a maximum accepts is decoded whole."""
    from speechqe.streaming import STREAM_ABOVE_S

    spec = plugins.get(name).spec
    assert spec.length_rule, name
    if spec.max_duration is None:
        assert "window" in spec.length_rule
    else:
        assert 0 < spec.max_duration <= STREAM_ABOVE_S
        assert f"{spec.max_duration:g} s" in spec.length_rule
    m = plugins.create(name)
    assert m.max_seconds() == spec.max_duration or name in ("mcd", "f0")


def test_output_names_are_unique_across_metrics():
    names = [o for n in EXPECTED for o in plugins.get(n).spec.output_names]
    assert len(names) == len(set(names))


def test_params_change_the_model_id_and_unknown_keys_are_errors():
    assert plugins.create("si_sdr").model_id() != plugins.create(
        "si_sdr", {"zero_mean": False}).model_id()
    assert plugins.create("mcd").model_id() != plugins.create(
        "mcd", {"include_c0": True}).model_id()
    with pytest.raises(ConfigError, match="unknown parameter"):
        plugins.create("pesq", {"mode": "nb"})
    with pytest.raises(ConfigError, match="unknown parameter"):
        plugins.create("dnsmos", {"max_batch": 4})  # a run-time setting, not a parameter


def test_listing_metrics_imports_no_heavy_library():
    code = (
        "import sys; from speechqe import plugins; "
        "[c.spec for c in plugins.available().values()]; "
        "[plugins.create(n) for n in plugins.available()]; "
        "heavy = ['torch', 'torchaudio', 'onnxruntime', 'librosa', 'pesq', 'pystoi', "
        "'pyworld', 'pysptk', 'speechmos', 'distillmos', 'scipy']; "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
