"""The example configs in docs/ are valid configurations."""

from __future__ import annotations

import pytest

from conftest import REPO
from speechqe.errors import ConfigError
from speechqe.predictors.config import from_mapping
from speechqe.predictors.train import MOSTrainConfig, load_config


@pytest.mark.parametrize("name", ["mos-bvcc.yaml", "mos-listening-test.yaml"])
def test_example_configs_parse(name):
    cfg = load_config(REPO / "docs" / "examples" / name)
    assert cfg.weak.features and cfg.strong and cfg.whisper
    for s in cfg.strong:
        s.encoder_spec()
    for w in cfg.whisper:
        w.encoder_spec()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"config\.strong\[0\]\.train: unknown key\(s\) \['stepz'\]"):
        from_mapping(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"},
                                      "strong": [{"train": {"stepz": 3}}]}, "config")
    with pytest.raises(ConfigError, match="at least one learner"):
        from_mapping(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"}}, "config")
    with pytest.raises(ConfigError, match="unique"):
        from_mapping(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"},
                                      "strong": [{"name": "a"}], "whisper": [{"name": "a"}]}, "config")
