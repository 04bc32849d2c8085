"""Watch files: schedules and parameters, validated when loaded (not at 2 a.m.)."""

from __future__ import annotations

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
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', colour: red}", "unknown parameters ['colour']"),
    ("watches:\n  - {name: a, source: /x}", "exactly one of cron or interval_minutes"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', interval_minutes: 5}", "exactly one"),
    ("watches:\n  - {name: a, source: /x, cron: 'at two'}", "bad schedule"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', device: tpu}", "device must be one of"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *', chunk_size: 0}", "chunk_size: Input should be greater than or equal to 1"),
    ("watches:\n  - {name: a, source: /x, cron: '0 2 * * *'}\n  - {name: a, source: /y, cron: '0 3 * * *'}", "unique"),
    ("jobs: []", "one key, 'watches'"),
])
def test_bad_watch_files_are_errors(tmp_path, body, message):
    from speechqe.flows import deployments as dep

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        dep.load_watches(_write(tmp_path, body))
