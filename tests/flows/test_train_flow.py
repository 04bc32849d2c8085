"""The train-mos-predictor flow end to end on the session's Prefect API, with a tiny CPU config
(log-mel features, ridge learners): the bundle the library trains lands in ``out`` with its
validation, GPU tasks are tagged, artifacts are published, a rerun trains nothing, other data
or another config in the same folder is refused, bad parameters fail before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import write_tone

from speechqe.errors import ConfigError


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        return c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _artifact(key):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert arts, key
    return arts[0].data


def _labelled(root: Path, name: str, n: int, seed: int) -> Path:
    """``n`` tones in four systems with more noise and a lower label from system to system."""
    rows = []
    for k in range(n):
        level = k % 4
        path = root / name / f"s{level}" / f"u{k}.wav"
        write_tone(path, seconds=0.3, freq=180 + 30 * k, amp=0.3)
        x, sr = sf.read(path)
        sf.write(path, x + 0.05 * level * np.random.default_rng(seed + k).standard_normal(x.size), sr)
        rows.append([f"{name}/s{level}/u{k}.wav", f"s{level}", f"{name}-u{k}", 4.5 - level])
    with open(root / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["wav_path", "system_id", "sample_id", "avg_score"])
        w.writerows(rows)
    return root / f"{name}.csv"


def _config(root: Path, **changes) -> Path:
    cfg = {
        "train": {"format": "sheet", "path": "train.csv"},
        "valid": {"format": "sheet", "path": "valid.csv"},
        "folds": 2, "group_by": "item", "device": "cpu", "cache": "off",
        "weak": {"features": [{"name": "logmel", "encoder": {"kind": "logmel"}}],
                 "learners": [{"kind": "ridge"}]},
        "stacking": {"stage2": [{"kind": "ridge"}]},
        **changes,
    }
    path = root / f"cfg{len(list(root.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def mos_data(tmp_path):
    root = tmp_path / "data"
    _labelled(root, "train", 12, 0)
    _labelled(root, "valid", 6, 100)
    return root


def test_flow_trains_validates_publishes_and_reuses(tmp_path, prefect_api, mos_data, monkeypatch):
    from prefect.client.orchestration import get_client
    from speechqe.flows import train as tf
    from speechqe.predictors import train as lib
    from speechqe.predictors.bundle import bundle_hash

    config, out = _config(mos_data), tmp_path / "bundles" / "v1"
    # The GPU path forced on (training itself stays on the CPU): both steps carry the tag.
    monkeypatch.setattr(lib, "uses_gpu", lambda cfg: True)
    state = tf.train_mos_predictor(config=str(config), out=str(out), gpu_slots=1, return_state=True)
    first = state.result()
    assert first["status"] == "trained" and first["validated"] is True
    assert first["bundle"] == str(out) and first["bundle_id"] == bundle_hash(out)
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["columns"] == ["logmel-ridge"] == first["columns"]
    assert set(meta["report"]["valid"]) == {"logmel-ridge", "ensemble"}
    assert meta["report"]["valid_data"]["n_items"] == 6
    assert not list(out.parent.glob(".v1.work"))
    runs = {t.name.rsplit("-", 1)[0]: t for t in _task_runs(state.state_details.flow_run_id)}
    assert {"load-config", "check-bundle", "train", "validate", "publish-artifacts"} <= set(runs)
    assert tf.GPU_TAG in runs["train"].tags and tf.GPU_TAG in runs["validate"].tags
    assert tf.GPU_TAG not in runs["load-config"].tags
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name(f"tag:{tf.GPU_TAG}").limit == 1

    # The flow's bundle is the library's: same data, same learners, same metrics.
    ref = lib.train_bundle(lib.load_config(config), tmp_path / "lib", base=mos_data)
    assert ref.meta["training_data"]["content_hash"] == meta["training_data"]["content_hash"]
    for part in ("oof", "stage2_oof", "valid"):
        assert ref.meta["report"][part] == meta["report"][part], part
    # ... and its metrics table is the published artifact.
    md = _artifact("speechqe-mos-v1")
    assert "| valid | ensemble |  |  | 6 |" in md and "logmel-ridge" in md and "train (out-of-fold)" in md
    assert out.resolve().as_uri() in _artifact("speechqe-mos-v1-bundle")

    # A rerun trains nothing and leaves the bundle as it was (its id included).
    monkeypatch.setattr(lib, "uses_gpu", lambda cfg: False)
    mtime = (out / "bundle.json").stat().st_mtime_ns
    state = tf.train_mos_predictor(config=str(config), out=str(out), device="cpu", return_state=True)
    again = state.result()
    assert again["status"] == "reused" and again["bundle_id"] == first["bundle_id"]
    assert (out / "bundle.json").stat().st_mtime_ns == mtime
    names = {t.name.rsplit("-", 1)[0] for t in _task_runs(state.state_details.flow_run_id)}
    assert "train" not in names and "check-bundle" in names

    # Other learners, or other labels, in the same folder: refused, the bundle kept.
    other = _config(mos_data, stacking={"stage2": [{"kind": "ridge"}, {"kind": "svr"}]})
    state = tf.train_mos_predictor(config=str(other), out=str(out), return_state=True)
    assert state.is_failed() and "another configuration (differs in stacking)" in state.message
    rows = (mos_data / "train.csv").read_text().replace(",4.5\n", ",4.0\n", 1)
    (mos_data / "train.csv").write_text(rows)
    state = tf.train_mos_predictor(config=str(config), out=str(out), return_state=True)
    assert state.is_failed() and "trained on other data" in state.message
    assert (out / "bundle.json").stat().st_mtime_ns == mtime


def test_bad_parameters_fail_before_any_work(tmp_path, prefect_api, mos_data):
    from speechqe.flows.train import train_mos_predictor

    good = _config(mos_data)
    bad_key = _config(mos_data, weak={"features": [], "learnerz": []})
    out = tmp_path / "never"
    for kw, message in [
        ({"config": str(tmp_path / "missing.yaml")}, "config file not found"),
        ({"config": str(bad_key)}, "weak: unknown key 'learnerz'"),
        ({"config": str(good), "device": "tpu"}, "device must be one of auto, cpu, cuda, cuda:N"),
        ({"config": str(good), "gpu_slots": 0}, "gpu_slots must be at least 1"),
        ({"config": str(good), "gpu_slots": "many"}, "gpu_slots"),
    ]:
        state = train_mos_predictor(**{"out": str(out), **kw}, return_state=True)
        assert state.is_failed() and message in state.message, (kw, state.message)
        if state.state_details.flow_run_id:
            names = {t.name.rsplit("-", 1)[0] for t in _task_runs(state.state_details.flow_run_id)}
            assert "train" not in names
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    state = train_mos_predictor(config=str(good), out=str(tmp_path / "file"), return_state=True)
    assert state.is_failed() and "is a file, not a bundle folder" in state.message


def test_mos_train_command_runs_the_flow(tmp_path, prefect_api, mos_data):
    from typer.testing import CliRunner

    from speechqe.cli.main import app

    config, out = _config(mos_data), tmp_path / "b"
    args = ["mos", "train", "--config", str(config), "--out", str(out), "--flow"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "logmel-ridge" in res.output and "bundle " in res.output
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "not retrained" in res.output, res.output
    # Without --flow the command never touches a finished bundle.
    res = CliRunner().invoke(app, args[:-1])
    assert res.exit_code == 2 and "already holds a bundle" in res.output
    res = CliRunner().invoke(app, args + ["--device", "tpu"])
    assert res.exit_code == 2 and "device must be" in res.output


def test_library_refuses_what_the_flow_relies_on(tmp_path, mos_data):
    """finished_bundle: nothing there is None; validate_bundle: validated once."""
    from speechqe.predictors import train as lib

    cfg = lib.load_config(_config(mos_data))
    assert lib.finished_bundle(cfg, tmp_path / "nothing", base=mos_data) is None
    lib.train_bundle(cfg, tmp_path / "b", base=mos_data, validate=False)
    assert "valid" not in json.loads((tmp_path / "b" / "bundle.json").read_text())["report"]
    assert lib.finished_bundle(cfg, tmp_path / "b", base=mos_data) is not None
    ev = lib.validate_bundle(cfg, tmp_path / "b", base=mos_data)
    assert ev["ensemble"]["n_items"] == 6
    mtime = (tmp_path / "b" / "bundle.json").stat().st_mtime_ns
    assert lib.validate_bundle(cfg, tmp_path / "b", base=mos_data) == ev
    assert (tmp_path / "b" / "bundle.json").stat().st_mtime_ns == mtime
    write_tone(mos_data / "valid" / "s0" / "u0.wav", seconds=0.3, freq=500, amp=0.3, seed=7)
    with pytest.raises(ConfigError, match="validated on other data"):
        lib.validate_bundle(cfg, tmp_path / "b", base=mos_data)
