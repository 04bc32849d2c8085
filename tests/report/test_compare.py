"""Run comparisons: the paired bootstrap flags a planted drop and never noise alone, in each
metric's declared direction; the ``compare`` command shows and gates on it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import write_tone
from typer.testing import CliRunner

from speechqe.engine.aggregate import bootstrap
from speechqe.engine.history import RegressionPolicy, compare_records
from speechqe.metric import OutputSpec

SPECS = {
    "q": OutputSpec("q", higher_is_better=True, valid_range=(1.0, 5.0)),
    "err": OutputSpec("err", higher_is_better=False, aggregation="ratio", ratio=("edits", "words")),
    "level": OutputSpec("level", higher_is_better=None),
}
N = 40


def _records(q_by_system, err_by_system=None, level_shift=0.0):
    out = []
    for system, q in q_by_system.items():
        for i, v in enumerate(q):
            out.append({"system": system, "item_id": f"u{i}", "metric": "q", "value": float(v),
                        "status": "ok", "extra": {}})
            out.append({"system": system, "item_id": f"u{i}", "metric": "level",
                        "value": float(v) + level_shift, "status": "ok", "extra": {}})
        edits = (err_by_system or {}).get(system)
        if edits is not None:
            for i, e in enumerate(edits):
                out.append({"system": system, "item_id": f"u{i}", "metric": "err", "value": e / 10,
                            "status": "ok", "extra": {"edits": int(e), "words": 10}})
    return out


def _base(seed=0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(3.0, 0.6, N)  # items differ much more than runs do
    edits = rng.integers(0, 4, N)
    return rng, difficulty, edits


def test_noise_alone_is_never_flagged():
    for seed in range(20):
        rng, d, e = _base(seed)
        a = _records({"sys_a": d, "sys_b": d + 0.2}, {"sys_a": e, "sys_b": e})
        b = _records({"sys_a": d + rng.normal(0, 0.05, N), "sys_b": d + 0.2 + rng.normal(0, 0.05, N)},
                     {"sys_a": e, "sys_b": e}, level_shift=0.01)
        changes = compare_records(a, b, SPECS)
        assert len(changes) == 6 and all(c.paired and c.n_paired == N for c in changes)
        assert not [c for c in changes if c.flag], (seed, [c.as_dict() for c in changes if c.flag])


def test_planted_drop_is_flagged_by_direction_only_where_planted():
    rng, d, e = _base(1)
    noise = lambda: rng.normal(0, 0.05, N)  # noqa: E731
    a = _records({"sys_a": d, "sys_b": d}, {"sys_a": e, "sys_b": e})
    worse_e = e + (rng.random(N) < 0.5)  # about half of sys_b's utterances get one more error
    b = _records({"sys_a": d + noise(), "sys_b": d - 0.15 + noise()},
                 {"sys_a": e, "sys_b": worse_e}, level_shift=5.0)
    by = {(c.system, c.metric): c for c in compare_records(a, b, SPECS)}
    q = by[("sys_b", "q")]
    assert q.regression and q.flag == "regression" and q.ci_high < 0 and q.delta == pytest.approx(-0.15, abs=0.02)
    assert by[("sys_b", "err")].regression and by[("sys_b", "err")].delta > 0  # lower is better
    assert not by[("sys_a", "q")].flag and not by[("sys_a", "err")].flag
    # a large change of a metric without a direction is shown, never flagged
    assert by[("sys_b", "level")].delta == pytest.approx(4.85, abs=0.05) and not by[("sys_b", "level")].flag
    # pairing is what makes the drop visible: as independent samples its CI spans zero
    _, lo, hi = bootstrap(np.array([r["value"] for r in a if r["metric"] == "q" and r["system"] == "sys_b"]), None,
                          np.array([r["value"] for r in b if r["metric"] == "q" and r["system"] == "sys_b"]), None)
    assert lo < 0 < hi
    # a per-metric threshold above the drop silences it; improvements mirror regressions
    strict = compare_records(a, b, SPECS, RegressionPolicy(absolute=(("q", 0.2),)))
    assert not [c for c in strict if c.metric == "q" and c.flag]
    back = {(c.system, c.metric): c for c in compare_records(b, a, SPECS)}
    assert back[("sys_b", "q")].improvement and not back[("sys_b", "q")].regression


def test_ratio_bootstrap_and_edge_cases():
    num, den = np.array([1.0, 2, 0, 3]), np.array([10.0, 10, 5, 10])
    delta, lo, hi = bootstrap(num, den, num * 2, den, paired=True)
    assert delta == pytest.approx(6 / 35) and lo <= delta <= hi
    assert bootstrap(np.array([1.0]), None, np.array([2.0]), paired=True) == (1.0, 1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap(np.array([]), None, np.array([]), paired=True))
    # error records are counted, not compared; a single shared item falls back to unpaired
    a = [{"system": "s", "item_id": "u0", "metric": "q", "value": 3.0, "status": "ok", "extra": {}},
         {"system": "s", "item_id": "u1", "metric": "q", "value": math.nan, "status": "error", "extra": {}}]
    b = [{"system": "s", "item_id": "u0", "metric": "q", "value": 2.0, "status": "ok", "extra": {}},
         {"system": "s", "item_id": "u2", "metric": "q", "value": 2.5, "status": "ok", "extra": {}}]
    (c,) = compare_records(a, b, SPECS)
    assert not c.paired and (c.n_a, c.n_b, c.n_errors_a, c.n_errors_b) == (1, 2, 1, 0)


@pytest.mark.parametrize("kw, message", [({"relative": -1}, ">= 0"), ({"level": 0.2}, "level"),
                                         ({"absolute": (("q", math.nan),)}, "threshold of q")])
def test_bad_policies_are_errors(kw, message):
    from speechqe.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        RegressionPolicy(**kw)
    with pytest.raises(ConfigError, match="METRIC=VALUE"):
        RegressionPolicy.parse(thresholds=["pesq"])


#: Names that are markup: a report must show them as text and never run them.
HOSTILE_SYSTEM = '<img src=x onerror="window.__pwned=1">'
HOSTILE_ITEM = '"><svg onload=window.__pwned=2>'
# three words: the toy ASR keeps the second (the script) and errs on the others (WER 2/3)
HOSTILE_TEXT = "say </script><script>window.__pwned=3</script> <b>bold</b>&amp;more"


def make_two_runs(tmp_path, toy_metrics, hostile=False):
    """Two stored runs named 'nightly' over the same items: run B's sys_b is noisier (its
    toy_snr drops), sys_a is unchanged. With ``hostile``, sys_a, one file name and the
    transcripts are HTML/JS. Returns the store path and the two run ids."""
    import soundfile as sf

    from speechqe.cli.main import app

    names = {"sys_a": HOSTILE_SYSTEM if hostile else "sys_a", "sys_b": "sys_b"}
    stems = [f"u{k}" for k in range(8)] + ([HOSTILE_ITEM] if hostile else [])
    for k, stem in enumerate(stems):
        write_tone(tmp_path / "ref" / f"{stem}.wav", seconds=0.3, freq=180 + 30 * k, seed=k)
        for run, noise in (("a", 0.02), ("b", 0.08)):
            for sys_key, system in names.items():
                x = write_tone(tmp_path / run / system / f"{stem}.wav", seconds=0.3,
                               freq=180 + 30 * k, seed=k)
                if sys_key == "sys_b":
                    extra = noise * np.random.default_rng(50 + k).standard_normal(x.size)
                    sf.write(tmp_path / run / system / f"{stem}.wav", (x + extra).astype(np.float32), 16000)
    lines = [f"{stem}\t{HOSTILE_TEXT if hostile and k in (0, 8) else f'one two three {k}'}\n"
             for k, stem in enumerate(stems)]
    (tmp_path / "t.tsv").write_text("".join(lines))
    db = tmp_path / "s.duckdb"
    runner = CliRunner()
    ids = []
    for run in ("a", "b"):
        res = runner.invoke(app, ["score", str(tmp_path / run), "--ref", str(tmp_path / "ref"),
                                  "--text", str(tmp_path / "t.tsv"), "--metrics",
                                  "toy_level,toy_snr,toy_asr", "--db", str(db), "--name", "nightly",
                                  "--progress", "none"])
        assert res.exit_code == 0, res.output
        from speechqe.store import Store

        with Store(db, read_only=True) as st:
            ids.append(st.run("latest")["run_id"])
    return db, ids


def test_compare_command_flags_and_gates(tmp_path, toy_metrics):
    from speechqe.cli.main import app

    db, (a, b) = make_two_runs(tmp_path, toy_metrics)
    runner = CliRunner()
    res = runner.invoke(app, ["compare", a, b, "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "REGRESSION" in res.output and "1 regression(s)" in res.output
    res = runner.invoke(app, ["compare", a, b, "--db", str(db), "--json", "--fail-on-regression"])
    assert res.exit_code == 1
    changes = json.loads(res.output)["changes"]
    flagged = [(c["system"], c["metric"]) for c in changes if c["flag"] == "regression"]
    assert flagged == [("sys_b", "toy_snr")]
    res = runner.invoke(app, ["compare", a, b, "--db", str(db), "--threshold", "toy_snr=100"])
    assert res.exit_code == 0 and "0 regression(s)" in res.output
    res = runner.invoke(app, ["compare", a, "nope", "--db", str(db)])
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_report_command_writes_and_prints_the_path(tmp_path, toy_metrics):
    from speechqe.cli.main import app

    db, (a, b) = make_two_runs(tmp_path, toy_metrics)
    runner = CliRunner()
    res = runner.invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "1 regression(s) against run " + a in res.output
    assert res.output.strip().endswith(f"report: {tmp_path / 'r.html'}")
    res = runner.invoke(app, ["report", a, "--db", str(db), "--baseline", "none", "--worst", "0"])
    default = db.parent / "reports" / f"{a}.html"
    assert res.exit_code == 0 and default.is_file() and "regression" not in res.output
    assert "No earlier finished run" in default.read_text()
    res = runner.invoke(app, ["report", "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no results store" in res.output
