"""``--param METRIC.NAME=VALUE`` through ``speechqe score``: values are typed by the metric's
declared parameters, bad ones stop the command (exit 2) before any file is hashed, and equal
settings written differently are one model id, one set of records and one stored form."""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import write_tone
from typer.testing import CliRunner

from speechqe.cli.main import app

runner = CliRunner()


def _set(tmp_path, n=3):
    for k in range(n):
        write_tone(tmp_path / "gen" / f"u{k}.wav", seconds=0.4, seed=k, freq=200.0 + 20 * k)
        write_tone(tmp_path / "ref" / f"u{k}.wav", seconds=0.4, seed=k + 100, freq=200.0 + 20 * k)
    return tmp_path / "gen"


def _score(tmp_path, *args):
    return runner.invoke(app, ["score", str(tmp_path / "gen"), "--ref", str(tmp_path / "ref"),
                               "--db", str(tmp_path / "s.duckdb"), "--progress", "none", *args])


@pytest.mark.parametrize("param, message", [
    ("mcd.include_c0=maybe",
     "--param mcd.include_c0: Input should be a valid boolean, unable to interpret input (got 'maybe')"),
    ("si_sdr.max_length_diff_s=abc",
     "--param si_sdr.max_length_diff_s: Input should be a valid number, unable to parse string as a number (got 'abc')"),
    ("mcd.align=diagonal", "--param mcd.align: Input should be 'dtw' or 'none' (got 'diagonal')"),
    ("mcd.c0=1", "--param mcd.c0: unknown parameter (known: f0_method, f0_floor, f0_ceil, "),
    ("mcd.f0_floor=900", "metric 'mcd': need f0_floor < f0_ceil (got f0_floor=900.0, f0_ceil=800.0) "
                         "(set by --param mcd.f0_floor)"),
    ("pesq.mode=nb", "--param given for metrics not in this run: ['pesq']"),
    ("nope.x=1", "--param given for metrics not in this run: ['nope']"),
])
def test_bad_params_exit_2_before_any_file_is_hashed(tmp_path, monkeypatch, param, message):
    _set(tmp_path)

    def no_hashing(*a, **k):
        raise AssertionError("a file was hashed before the parameters were checked")

    # import first, so that no module binds the stand-in by name for later tests
    import speechqe.assets
    import speechqe.engine.evaluation
    import speechqe.manifest  # noqa: F401

    monkeypatch.setattr("speechqe.hashing.sha256_file", no_hashing)
    monkeypatch.setattr("speechqe.manifest.sha256_file", no_hashing, raising=False)
    res = _score(tmp_path, "--metrics", "si_sdr,mcd", "--param", param)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "s.duckdb").exists()  # nothing was started


def test_a_suite_param_error_names_the_suite_file(tmp_path):
    _set(tmp_path)
    suite = tmp_path / "mine.yaml"
    suite.write_text("metrics:\n  - si_sdr: {zero_mean: sometimes}\n")
    res = _score(tmp_path, "--suite", str(suite))
    assert res.exit_code == 2
    assert (f"{suite}: si_sdr.zero_mean: Input should be a valid boolean, unable to interpret "
            "input (got 'sometimes')") in " ".join(res.output.split())


def test_a_param_given_twice_is_an_error(tmp_path):
    _set(tmp_path)
    res = _score(tmp_path, "--metrics", "mcd", "--param", "mcd.include_c0=0",
                 "--param", "mcd.include_c0=1")
    assert res.exit_code == 2 and "--param mcd.include_c0 is given twice ('0' and '1')" in res.output


def _db(tmp_path):
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    try:
        scores = con.execute(
            "SELECT metric, model_id, count(*) FROM scores GROUP BY metric, model_id "
            "ORDER BY metric, model_id").fetchall()
        runs = con.execute("SELECT params, n_reused FROM runs ORDER BY started_at").fetchall()
    finally:
        con.close()
    return scores, [(json.loads(p)["params"], n) for p, n in runs]


def test_equal_settings_are_one_model_id_and_one_set_of_records(tmp_path):
    """include_c0=0 and include_c0=false are one setting (the default, spelled out): the
    second run reuses every record of the first; true is another setting and is scored."""
    _set(tmp_path, n=3)
    first = _score(tmp_path, "--metrics", "mcd,si_sdr", "--param", "mcd.include_c0=0",
                   "--param", "si_sdr.max_length_diff_s=1e-3")
    assert first.exit_code == 0, first.output
    second = _score(tmp_path, "--metrics", "mcd,si_sdr", "--param", "mcd.include_c0=false",
                    "--param", "si_sdr.max_length_diff_s=0.001")
    assert second.exit_code == 0, second.output
    scores, runs = _db(tmp_path)
    mcd_ids = [(mid, n) for metric, mid, n in scores if metric == "mcd"]
    assert len(mcd_ids) == 1 and mcd_ids[0][1] == 3  # one model id, one record per item
    assert len([1 for metric, _, _ in scores if metric == "si_sdr"]) == 1
    canonical = {"mcd": {"include_c0": False}, "si_sdr": {"max_length_diff_s": 0.001}}
    assert runs == [(canonical, 0), (canonical, 3)]  # stored canonical; second run reused all 3

    third = _score(tmp_path, "--metrics", "mcd,si_sdr", "--param", "mcd.include_c0=true",
                   "--param", "si_sdr.max_length_diff_s=1e-3")
    assert third.exit_code == 0, third.output
    scores, runs = _db(tmp_path)
    assert len([1 for metric, _, _ in scores if metric == "mcd"]) == 2  # a new setting, scored
    # every item has an mcd record to compute, so none is reused whole
    assert runs[-1] == ({"mcd": {"include_c0": True}, "si_sdr": {"max_length_diff_s": 0.001}}, 0)


def test_metrics_json_lists_each_metrics_parameters_with_defaults():
    res = runner.invoke(app, ["metrics", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["mcd"]["params"]["include_c0"] is False and out["mcd"]["params"]["align"] == "dtw"
    assert out["si_sdr"]["params"] == {"zero_mean": True, "max_length_diff_s": 0.05}
    assert out["pesq"]["params"] == {}
