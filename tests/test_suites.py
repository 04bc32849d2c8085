"""Suite files: every shipped suite parses, names registered metrics with valid parameters;
unknown keys are errors."""

from __future__ import annotations

import re

import pytest

from speechqe import suites
from speechqe.errors import ConfigError
from speechqe import plugins


@pytest.mark.parametrize("name", ["default", "tts", "enhancement"])
def test_shipped_suites_are_valid(name):
    s = suites.load_suite(name)
    assert s.entries
    for e in s.entries:
        plugins.create(e.ref, dict(e.params))  # unknown metric or parameter raises


@pytest.mark.parametrize("doc, message", [
    ({"name": "x", "metrics": ["pesq"], "metric": []},
     "t: unknown key 'metric' (known: name, description, metrics)"),
    ({"metrics": [{"name": "pesq", "param": {}}]},
     "t: metrics.0: unknown key 'param' (known: name, params)"),
    ({"metrics": ["pesq", {"pesq": {}}]}, "t: metrics listed twice: ['pesq']"),
    ({"name": "x"}, "t: metrics: the suite lists no metrics"),
    ({"metrics": "pesq"}, "t: metrics: Input should be a valid list (got 'pesq')"),
    ({"metrics": [{"mcd": "dtw"}]}, "t: metrics.0.mcd: Input should be a valid dictionary (got 'dtw')"),
    ({"metrics": [{"mcd": {}, "f0": {}}]}, "t: metrics.0: a metric entry is 'name', {name: params} or"),
    ({"metrics": [3]}, "t: metrics.0: a metric entry is"),
    ({"description": 3, "metrics": ["pesq"]}, "t: description: Input should be a valid string (got 3)"),
])
def test_unknown_keys_and_bad_values_are_errors(doc, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        suites.parse_suite(doc, "t")


def test_suite_file_errors_name_the_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nmetrics: [pesq\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: not valid YAML")):
        suites.load_suite(str(p))
    p.write_text("- pesq\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: a suite must be a mapping")):
        suites.load_suite(str(p))


def test_entry_parameters_are_validated_with_the_overrides_and_made_canonical(tmp_path):
    """resolve_params: a suite's own parameters and --param overrides are checked together
    against the metric's types; errors name the suite file or the --param; values come back in
    canonical form."""
    p = tmp_path / "s.yaml"
    p.write_text("metrics:\n  - mcd: {align: none, include_c0: 'yes'}\n  - si_sdr\n")
    s = suites.load_suite(str(p))
    assert plugins.resolve_params(s.entries, origin=s.path) == [
        {"align": "none", "include_c0": True}, {}]
    assert plugins.resolve_params(s.entries, {"mcd": {"include_c0": "0"}, "si_sdr": {"zero_mean": "false"}},
                                 origin=s.path) == [{"align": "none", "include_c0": False},
                                                    {"zero_mean": False}]
    with pytest.raises(ConfigError, match=re.escape(
            "--param mcd.include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')")):
        plugins.resolve_params(s.entries, {"mcd": {"include_c0": "maybe"}}, origin=s.path)
    with pytest.raises(ConfigError, match=re.escape("--param given for metrics not in this run: ['pesq']")):
        plugins.resolve_params(s.entries, {"pesq": {"x": "1"}}, origin=s.path)
    p.write_text("metrics:\n  - mcd: {align: diagonal}\n")
    s = suites.load_suite(str(p))
    with pytest.raises(ConfigError, match=re.escape(
            f"{p}: mcd.align: Input should be 'dtw' or 'none' (got 'diagonal')")):
        plugins.resolve_params(s.entries, origin=s.path)


def test_entry_forms(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: mine\nmetrics:\n  - pesq\n  - mcd: {align: none}\n  - name: f0\n    params: {align: none}\n")
    s = suites.load_suite(str(p))
    assert [(e.ref, dict(e.params)) for e in s.entries] == [
        ("pesq", {}), ("mcd", {"align": "none"}), ("f0", {"align": "none"})
    ]
