"""The example configs in docs/ are valid; config errors name the file and the key; the
reference in docs/mos.md is the one the models give."""

from __future__ import annotations

import pytest

from conftest import REPO
from speechqe.config import validate
from speechqe.errors import ConfigError
from speechqe.predictors.config import MOSTrainConfig, config_reference
from speechqe.predictors.train import load_config


@pytest.mark.parametrize("name", ["mos-bvcc.yaml", "mos-listening-test.yaml", "mos-small-test.yaml"])
def test_example_configs_parse(name):
    cfg = load_config(REPO / "docs" / "examples" / name)
    assert cfg.weak.features
    for s in cfg.strong:
        s.encoder_spec()
    for w in cfg.whisper:
        w.encoder_spec()


def test_small_test_preset_is_nested_and_cheap():
    cfg = load_config(REPO / "docs" / "examples" / "mos-small-test.yaml")
    assert not cfg.strong and not cfg.whisper
    assert cfg.nested_outer_folds(130) == cfg.folds == 4
    assert cfg.score_range == (0.0, 100.0)
    assert {f.source for f in cfg.weak.features} >= {"signal", "dnsmos", "distillmos"}


def test_config_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "mos.yaml"
    p.write_text("train: {format: sheet, path: x}\nstrong: [{train: {stepz: 3}}]\n")
    with pytest.raises(ConfigError, match=r"mos\.yaml: strong\.0\.train: unknown key 'stepz'.*docs/mos\.md#configuration-reference"):
        load_config(p)
    with pytest.raises(ConfigError, match="at least one learner"):
        validate(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"}}, "config")
    with pytest.raises(ConfigError, match="unique"):
        validate(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"},
                                  "strong": [{"name": "a"}], "whisper": [{"name": "a"}]}, "config")
    with pytest.raises(ConfigError, match=r"config: score_range: .*high > low"):
        validate(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"}, "score_range": [5, 1],
                                  "weak": {"features": [{"name": "s", "source": "signal"}]}}, "config")
    with pytest.raises(ConfigError, match="nested_folds must be auto, 0"):
        validate(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"}, "nested_folds": 1,
                                  "weak": {"features": [{"name": "s", "source": "signal"}]}}, "config")
    with pytest.raises(ConfigError, match=r"weak\.features\.0: encoder: kind: .*'wav3vec'"):
        validate(MOSTrainConfig, {"train": {"format": "sheet", "path": "x"},
                                  "weak": {"features": [{"name": "e", "encoder": {"kind": "wav3vec"}}]}}, "config")


def test_docs_carry_the_reference_of_every_key():
    """docs/mos.md holds exactly what config_reference() generates from the models, so every
    key and default is documented and no documented default is stale."""
    doc = (REPO / "docs" / "mos.md").read_text(encoding="utf-8")
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in doc and end in doc
    block = doc.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == config_reference().strip(), (
        "docs/mos.md's reference is stale: paste speechqe.predictors.config.config_reference()")
    for key in MOSTrainConfig.model_fields:
        assert f"| `{key}` |" in block
