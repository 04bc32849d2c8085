"""Metric parameters are typed configs: every metric's ``Params`` converts values by their
declared types (one canonical value per setting, so one model id), refuses bad values and
unknown keys with the key, the value and what was expected, and survives a round trip. The
model ids of the default parameters are pinned: they key every stored record."""

from __future__ import annotations

import re
import typing

import pytest

from speechqe import plugins
from speechqe.config import StrictModel, plain, validate
from speechqe.errors import ConfigError
from speechqe.metric import build_params, params_id

#: params_id of each metric's default parameters. These were computed by the code before the
#: parameters became typed configs (frozen dataclasses hashed with dataclasses.asdict): equal
#: here means the conversion changed no stored model id, so no stored record is orphaned.
DEFAULT_IDS = {
    "cer": "p-a3c02d9eeef9", "wer": "p-a3c02d9eeef9",
    "distillmos": "default", "dnsmos": "default", "pesq": "default", "pesq_nb": "default",
    # stoi/estoi gained ``resample`` (issue 11) with their version 2 (pystoi at the input
    # rate): a new id on purpose, the old records (version 1, fed 10 kHz) are kept apart
    "estoi": "p-e8e07765db74", "stoi": "p-e8e07765db74",
    "f0": "p-3622d22311ca", "mcd": "p-1df5bcf6f3d1", "lsd": "p-92a0fa9a68c6",
    "si_sdr": "p-761c720a5351", "plcmos": "p-fbed2e908675", "speaker_sim": "p-6dc420c6c24a",
    "mos_ensemble": "p-b0de3ec120b6", "mos_strong": "p-b0de3ec120b6",
    "mos_weak": "p-b0de3ec120b6", "mos_whisper": "p-b0de3ec120b6",
    "utmos_strong": "p-80fdb11ae505",
}
#: Non-default settings with their ids from the same old code (canonical values: unchanged).
OLD_IDS = [
    ("mcd", {"include_c0": True}, "p-df9a350e5421"),
    ("si_sdr", {"zero_mean": False}, "p-d4820cef3fb3"),
    ("stoi", {"max_length_diff_s": 0.1}, "p-4f35aaae4d13"),  # with resample='pystoi' (v2)
    ("f0", {"align": "none"}, "p-8e1a3ce315be"),
    ("wer", {"beam_size": 1}, "p-052ea7f71d16"),
]
METRICS = sorted(DEFAULT_IDS)


def test_every_metric_is_pinned():
    assert set(plugins.available()) == set(DEFAULT_IDS)


@pytest.mark.parametrize("name", METRICS)
def test_params_are_strict_models_with_pinned_default_ids(name):
    cls = plugins.get(name)
    assert issubclass(cls.Params, StrictModel)
    p = plugins.create(name).params
    assert params_id(p) == DEFAULT_IDS[name]
    # round trip through the plain (JSON) form, and through strings as a command line gives them
    assert validate(cls.Params, plain(p)) == p
    as_text = {k: ("none" if v is None else str(v)) for k, v in plain(p).items()}
    assert params_id(build_params(cls, as_text)) == DEFAULT_IDS[name]
    # an unknown key lists the known ones
    known = ", ".join(cls.Params.model_fields) or "none"
    with pytest.raises(ConfigError, match=re.escape(
            f"metric '{name}': unknown parameter 'bogus' (known: {known})")):
        plugins.create(name, {"bogus": 1})


def _is_text(annotation) -> bool:
    return annotation is str or typing.get_origin(annotation) is typing.Literal


@pytest.mark.parametrize("name", METRICS)
def test_every_typed_parameter_refuses_a_value_of_the_wrong_type(name):
    """'abc%' is no number, boolean or choice: each such field refuses it, naming the
    parameter (as the --param it came from) and the value."""
    cls = plugins.get(name)
    for field, info in cls.Params.model_fields.items():
        if info.annotation is str:
            continue
        label = f"--param {name}.{field}"
        with pytest.raises(ConfigError, match=re.escape(f"{label}: ") + ".*" + re.escape("(got 'abc%')")):
            plugins.create(name, {field: "abc%"}, labels={field: label})


@pytest.mark.parametrize("name, params, expected", OLD_IDS)
def test_non_default_ids_of_canonical_values_are_unchanged(name, params, expected):
    assert params_id(plugins.create(name, params).params) == expected


@pytest.mark.parametrize("value", [0, "0", "false", "False", "no", "off", False])
def test_one_setting_one_model_id(value):
    """include_c0=0, 'false' and False are one value, the default: one model id."""
    m = plugins.create("mcd", {"include_c0": value})
    assert m.params.include_c0 is False
    assert params_id(m.params) == DEFAULT_IDS["mcd"]
    assert plugins.canonical_params("mcd", {"include_c0": value}) == {"include_c0": False}


def test_numbers_from_text_and_their_bounds():
    assert plugins.create("si_sdr", {"max_length_diff_s": "1e-3"}).params.max_length_diff_s == 0.001
    assert params_id(plugins.create("stoi", {"max_length_diff_s": "0.05"}).params) == DEFAULT_IDS["stoi"]
    assert plugins.create("plcmos", {"rounds": "3.0"}).params.rounds == 3
    assert plugins.create("mcd", {"mcep_alpha": "none"}).params.mcep_alpha is None
    assert plugins.create("mcd", {"mcep_alpha": "0.42"}).params.mcep_alpha == 0.42
    for ref, params, message in [
        ("mcd", {"include_c0": "maybe"},
         "include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')"),
        ("stoi", {"max_length_diff_s": "abc"},
         "max_length_diff_s: Input should be a valid number, unable to parse string as a number (got 'abc')"),
        ("stoi", {"max_length_diff_s": "-0.1"}, "max_length_diff_s: Input should be greater than or equal to 0 (got '-0.1')"),
        ("stoi", {"max_length_diff_s": "nan"}, "max_length_diff_s: Input should be a finite number (got 'nan')"),
        ("stoi", {"max_length_diff_s": True}, "max_length_diff_s: Input should be a number, not a boolean (got True)"),
        ("f0", {"align": "diagonal"}, "align: Input should be 'dtw' or 'none' (got 'diagonal')"),
        ("f0", {"f0_method": "yin"}, "f0_method: Input should be 'harvest' or 'dio' (got 'yin')"),
        ("f0", {"f0_floor": "900"}, "need f0_floor < f0_ceil (got f0_floor=900.0, f0_ceil=800.0)"),
        ("mcd", {"mcep_alpha": "1.5"}, "mcep_alpha: Input should be less than 1 (got '1.5')"),
        ("lsd", {"hop": 4096}, "need hop <= n_fft (got hop=4096, n_fft=2048)"),
        ("plcmos", {"rounds": "2.5"}, "rounds: Input should be a valid integer"),
        ("plcmos", {"rounds": 0}, "rounds: Input should be greater than or equal to 1 (got 0)"),
        ("pesq", {"mode": "nb"}, "unknown parameter 'mode' (known: none)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            plugins.create(ref, params)


def test_params_built_in_code_are_validated_too():
    from speechqe.metrics.mcd import McdParams

    with pytest.raises(ConfigError, match=re.escape(
            "McdParams: include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')")):
        McdParams(include_c0="maybe")
    p = McdParams(include_c0="1")
    assert p.include_c0 is True and plugins.get("mcd")(p).params is p
    with pytest.raises(TypeError, match=re.escape("F0 params must be AlignedWorldParams (got McdParams)")):
        plugins.get("f0")(p)


def test_a_plugin_with_dataclass_params_is_validated_the_same_way(toy_metrics):
    """Third-party metrics may keep frozen dataclasses: same conversion, same messages, and a
    dataclass built in code is validated when the metric is created."""
    cls = plugins.get("toy_level")
    assert plugins.create("toy_level", {"delay_s": "1e-3"}).params.delay_s == 0.001
    assert params_id(build_params(cls, {"delay_s": "0"})) == params_id(build_params(cls, {"delay_s": 0.0}))
    with pytest.raises(ConfigError, match=re.escape("metric 'toy_level': unknown parameter 'delay' (known: delay_s)")):
        plugins.create("toy_level", {"delay": 1})
    with pytest.raises(ConfigError, match=re.escape("--param toy_level.delay_s: Input should be a valid number")):
        plugins.create("toy_level", {"delay_s": "soon"}, labels={"delay_s": "--param toy_level.delay_s"})
    assert cls(cls.Params(delay_s="2")).params.delay_s == 2.0  # converted on creation
    with pytest.raises(ConfigError, match="delay_s: Input should be a valid number"):
        cls(cls.Params(delay_s="soon"))


def test_positional_value_is_typed_and_not_given_twice():
    assert plugins.create("wer:tiny.en").params.model == "tiny.en"
    with pytest.raises(ConfigError, match=re.escape(
            "metric 'wer': model is given twice ('wer:a' and model='b'); give it once")):
        plugins.create("wer:a", {"model": "b"})


def _doc_value(text: str):
    text = text.strip().strip("`")
    if text in ("true", "false"):
        return text == "true"
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def test_the_parameter_table_in_docs_matches_the_models():
    """docs/metrics.md lists every parameter of the signal and model metrics with its
    default; a parameter added, removed or re-defaulted without the docs fails here."""
    from conftest import REPO

    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    table = text.split("| metric | parameter | type | default |", 1)[1].split("\n\n", 1)[0]
    documented: dict[str, dict[str, object]] = {}
    for line in table.strip().splitlines()[1:]:
        metrics, params, _, defaults = [c.strip() for c in line.strip("|").split("|")]
        names = [m.strip(" `") for m in metrics.split(",")]
        pnames = [] if params == "(none)" else [p.strip(" `") for p in params.split(",")]
        values = [_doc_value(d) for d in defaults.split(",")] if pnames else []
        for m in names:
            documented.setdefault(m, {}).update(dict(zip(pnames, values)))
    elsewhere = {"wer", "cer", "speaker_sim", "mos_ensemble", "mos_strong", "mos_weak",
                 "mos_whisper", "utmos_strong"}  # asr.md, speaker.md, mos.md
    assert set(documented) == set(DEFAULT_IDS) - elsewhere
    for m, params in documented.items():
        defaults = plain(plugins.create(m).params)
        assert params == {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                          for k, v in defaults.items()}, m
