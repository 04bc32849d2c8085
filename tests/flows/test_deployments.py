"""Watch files: schedules and parameters, validated when loaded (not at 2 a.m.)."""

from __future__ import annotations

import re

import pytest

from speechqe.errors import ConfigError


def _write(tmp_path, text):
    p = tmp_path / "watches.yaml"
    p.write_text(text)
    return p


def test_watch_file_gives_scheduled_deployments(tmp_path, toy_metrics):
    from speechqe.flows import deployments as dep

    (tmp_path / "ref").mkdir()
    p = _write(tmp_path, f"""
watches:
  - name: tts-nightly
    source: {tmp_path}/nightly/*.jsonl
    cron: "30 2 * * *"
    timezone: Europe/Berlin
    suite: default
    references: {tmp_path}/ref
    store: {tmp_path}/tts.duckdb
    regression_thresholds: {{toy_snr: 0.5}}
  - name: codec-hourly
    source: {tmp_path}/codec
    interval_minutes: 60
    metrics: [toy_level]
    skip_unchanged: false
""")
    watches = dep.load_watches(p)
    assert [w.name for w in watches] == ["tts-nightly", "codec-hourly"]
    a, b = dep.deployments(watches)
    assert a.name == "tts-nightly" and a.entrypoint == "speechqe.flows.evaluate.evaluate_speech_set"
    assert a.schedules[0].schedule.cron == "30 2 * * *"
    assert a.schedules[0].schedule.timezone == "Europe/Berlin"
    assert a.parameters == {"source": f"{tmp_path}/nightly/*.jsonl", "name": "tts-nightly",
                            "skip_unchanged": True, "suite": "default",
                            "references": f"{tmp_path}/ref", "store": f"{tmp_path}/tts.duckdb",
                            "regression_thresholds": {"toy_snr": 0.5}}
    assert b.schedules[0].schedule.interval.total_seconds() == 3600
    assert b.parameters["skip_unchanged"] is False and b.parameters["metrics"] == ["toy_level"]


@pytest.mark.parametrize("body, message", [
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', colour: red}", "watch 1: unknown key(s) 'colour' (known: name, source, cron"),
    ("watches:\n  - {name: a, source: /x}", "exactly one of cron or interval_minutes"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', interval_minutes: 5}", "exactly one"),
    ("watches:\n  - {name: a, source: /x, cron: 'at two'}", "bad schedule"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', device: tpu}", "device must be one of"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', chunk_size: 0}", "chunk_size: Input should be greater than or equal to 1"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *'}\n  - {name: a, source: /y, cron: '0 3 * * *'}", "unique"),
    ("jobs: []", "unknown key 'jobs' (known: watches)"),
    ("watches: 3", "watches: Input should be a valid list (got 3)"),
    ("watches:\n  - {name: a, source: /x, interval_minutes: -5}", "interval_minutes: Input should be greater than 0 (got -5)"),
    ("watches:\n  - {name: a, source: /x, interval_minutes: 5, metrics: [nope]}", "watch 1: unknown metric 'nope'"),
    ("watches:\n  - {name: a, source: /x, interval_minutes: 5, suite: default, params: {mcd: {include_c0: maybe}}}",
     "watch 1: params.mcd.include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')"),
    ("watches:\n  - {name: a, source: /x, interval_minutes: 5, suite: default, params: {mcd: {c0: true}}}",
     "watch 1: params.mcd.c0: unknown parameter (known: f0_method"),
    ("watches:\n  - {name: a, source: /x, interval_minutes: 5, suite: nope}", "watch 1: unknown suite 'nope'"),
])
def test_bad_watch_files_are_errors(tmp_path, body, message):
    from speechqe.flows import deployments as dep

    with pytest.raises(ConfigError, match=re.escape(message)):
        dep.load_watches(_write(tmp_path, body))


def test_watch_round_trip_and_canonical_parameters(tmp_path):
    """A watch survives a round trip through its plain form; the flow it schedules records
    metric parameters in canonical form ('0' -> False)."""
    from speechqe.engine.evaluation import EvaluationConfig
    from speechqe.flows import deployments as dep

    w = dep.watch_from_dict({"name": "n", "source": str(tmp_path), "interval_minutes": 30,
                             "suite": "default", "params": {"mcd": {"include_c0": "0"}}}, "t")
    assert dep.Watch.model_validate(w.model_dump()) == w
    assert dict(w.parameters) == {"suite": "default", "params": {"mcd": {"include_c0": "0"}}}
    cfg = EvaluationConfig.create(**w.flow_parameters())
    assert cfg.params == {"mcd": {"include_c0": False}}
    assert cfg.as_params()["params"] == {"mcd": {"include_c0": False}}
