"""Suite files: every shipped suite parses, names registered metrics with valid parameters;
unknown keys are errors."""

from __future__ import annotations

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


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown suite keys"):
        suites.parse_suite({"name": "x", "metrics": ["pesq"], "metric": []}, "t")
    with pytest.raises(ConfigError, match="unknown keys"):
        suites.parse_suite({"metrics": [{"name": "pesq", "param": {}}]}, "t")
    with pytest.raises(ConfigError, match="listed twice"):
        suites.parse_suite({"metrics": ["pesq", {"pesq": {}}]}, "t")
    with pytest.raises(ConfigError, match="lists no metrics"):
        suites.parse_suite({"name": "x"}, "t")


def test_entry_forms(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: mine\nmetrics:\n  - pesq\n  - mcd: {align: none}\n  - name: f0\n    params: {align: none}\n")
    s = suites.load_suite(str(p))
    assert [(e.ref, dict(e.params)) for e in s.entries] == [
        ("pesq", {}), ("mcd", {"align": "none"}), ("f0", {"align": "none"})
    ]
