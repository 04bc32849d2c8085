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
from speechqe.engine.history import Comparison, RegressionPolicy, compare_records
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


def _rows(system, values, metric="q", status="ok", start=0):
    return [{"system": system, "item_id": f"u{start + i}", "metric": metric,
             "value": float(v) if status == "ok" else math.nan, "status": status, "extra": {}}
            for i, v in enumerate(values)]


def test_a_whole_system_missing_in_b_is_a_regression():
    a = _rows("sys_a", [3.0] * 8) + _rows("sys_b", [3.5] * 8)
    b = _rows("sys_a", [3.0] * 8)
    cmp = Comparison({"run_id": "A"}, {"run_id": "B"}, compare_records(a, b, SPECS))
    (gone,) = [c for c in cmp.changes if c.system == "sys_b"]
    assert gone.presence == "a_only" and gone.lost and gone.regression and gone.n_missing == 8
    assert math.isnan(gone.mean_b) and gone.mean_a == 3.5 and "missing in B" in gone.reasons[0]
    assert cmp.regressions == [gone] and not cmp.empty
    assert cmp.gate_failures() == ["sys_b / q: missing in B (8 items in A)"]
    # an option relaxes it: listed as lost, not a regression
    relaxed = compare_records(a, b, SPECS, RegressionPolicy(allow_missing=True))
    (gone,) = [c for c in relaxed if c.system == "sys_b"]
    assert gone.lost and not gone.regression and not gone.flag
    # a whole metric missing in B is lost output too; what only B has is new, never flagged
    b2 = _rows("sys_a", [3.0] * 8) + _rows("sys_b", [3.5] * 8, metric="level")
    by = {(c.system, c.metric): c for c in compare_records(a, b2, SPECS)}
    assert by[("sys_b", "q")].regression and by[("sys_b", "q")].presence == "a_only"
    assert by[("sys_b", "level")].presence == "b_only" and not by[("sys_b", "level")].flag


def test_runs_with_nothing_in_common_are_not_a_comparison():
    a = _rows("sys_a", [3.0] * 4)
    b = _rows("other", [3.0] * 4, metric="level")
    for policy in (RegressionPolicy(), RegressionPolicy(allow_missing=True)):
        cmp = Comparison({"run_id": "A"}, {"run_id": "B"}, compare_records(a, b, SPECS, policy), policy)
        assert cmp.empty
        (failure,) = cmp.gate_failures()
        assert "no system and metric in common" in failure and "sys_a" in failure and "other" in failure
    empty = Comparison({"run_id": "A"}, {"run_id": "B"}, compare_records([], b, SPECS))
    assert empty.empty and "A: no records" in empty.gate_failures()[0]


def test_items_missing_in_b_are_counted_and_means_are_over_the_pairs():
    """5 of 8 items of a system missing in B: the means and the change are over the 3 pairs
    (B's items are a different mix), the 5 are listed, and that is a regression."""
    a = _rows("s", [1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 4.0, 3.5])
    b = _rows("s", [1.0, 2.0, 3.0])  # the three hard items only
    (c,) = compare_records(a, b, SPECS)
    assert c.paired and c.n_paired == 3 and (c.n_a, c.n_b) == (8, 3)
    assert c.mean_a == pytest.approx(2.0) and c.mean_b == pytest.approx(2.0) and c.delta == 0.0
    assert c.n_missing == 5 and c.lost_items == ("u3", "u4", "u5", "u6", "u7")
    assert c.regression and not c.significant_drop and c.reasons == ["5 of 8 items missing in B"]
    relaxed = compare_records(a, b, SPECS, RegressionPolicy(allow_missing=True))
    assert not relaxed[0].regression and relaxed[0].lost


def test_items_newly_erroring_in_b_are_a_regression():
    a = _rows("s", [3.0] * 6) + _rows("s", [0] * 2, status="error", start=6)
    b = _rows("s", [3.0] * 4) + _rows("s", [0] * 4, status="error", start=4)
    (c,) = compare_records(a, b, SPECS)
    # u4, u5 newly fail; u6, u7 failed before (not lost, still counted as errors)
    assert (c.n_new_errors, c.n_missing, c.n_errors_a, c.n_errors_b) == (2, 0, 2, 4)
    assert c.lost_items == ("u4", "u5") and c.regression
    assert c.reasons == ["2 newly erroring in B"] and c.n_paired == 4
    # items B fixed or added are no regression
    (back,) = compare_records(b, a, SPECS)
    assert not back.lost and not back.regression and back.n_new == 0


def test_default_thresholds_come_from_the_output_specs():
    specs = {"w": OutputSpec("w", higher_is_better=False, regression_threshold=0.005),
             "q": SPECS["q"]}
    pol = RegressionPolicy()
    assert pol.threshold("w", 0.05, specs["w"]) == 0.005  # declared, not 1% of 0.05
    assert pol.threshold("q", 3.0, specs["q"]) == pytest.approx(0.03)  # relative fallback
    assert RegressionPolicy(absolute={"w": 0.02}).threshold("w", 0.05, specs["w"]) == 0.02
    # one word more on one of 40 ten-word utterances moves corpus WER by 0.0025: flagged by
    # a 1% relative threshold if the CI allowed it, never by the declared 0.005
    rng = np.random.default_rng(0)
    edits = rng.integers(0, 2, N)
    worse = edits + 1  # every utterance one more error: +0.1, far beyond any threshold
    mk = lambda e: [{"system": "s", "item_id": f"u{i}", "metric": "w", "value": e[i] / 10,  # noqa: E731
                     "status": "ok", "extra": {}} for i in range(N)]
    (c,) = compare_records(mk(edits), mk(worse), specs)
    assert c.regression and c.threshold == 0.005 and c.threshold_source == "declared"
    with pytest.raises(ValueError, match="regression_threshold"):
        OutputSpec("x", higher_is_better=True, regression_threshold=-1.0)


def test_every_registered_output_declares_a_default_threshold_and_the_docs_list_it():
    """The defaults are data on each OutputSpec; docs/orchestration.md shows the same table."""
    from conftest import REPO

    from speechqe.plugins import output_specs

    specs = output_specs()
    undeclared = sorted(n for n, s in specs.items() if s.higher_is_better is not None
                        and s.regression_threshold is None)
    assert not undeclared
    doc = (REPO / "docs" / "orchestration.md").read_text()
    for name, spec in specs.items():
        assert f"| `{name}` | {spec.regression_threshold:g} |" in doc, name


def test_threshold_names_are_checked():
    from speechqe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown metric output 'wr' \(did you mean 'wer'\?\); "
                                          r"thresholds are per output: .*\bwer\b"):
        RegressionPolicy.parse(thresholds=["wr=0.1"])
    assert dict(RegressionPolicy.parse(thresholds=["wer=0.01"]).absolute) == {"wer": 0.01}
    assert dict(RegressionPolicy.parse(thresholds={"q": 1}, known=["q"]).absolute) == {"q": 1.0}
    with pytest.raises(ConfigError, match="given twice"):
        RegressionPolicy.parse(thresholds=["wer=0.01", "wer=0.02"])
    with pytest.raises(ConfigError, match="unknown key 'relativ'"):
        from speechqe.config import validate

        validate(RegressionPolicy, {"relativ": 0.1})
    # records of an output that is no longer registered may still be given a threshold
    a = _rows("s", [1.0, 2.0], metric="gone")
    assert compare_records(a, a, SPECS, RegressionPolicy(absolute={"gone": 1.0}))[0].threshold == 1.0
    with pytest.raises(ConfigError, match="'qq'"):
        compare_records(a, a, SPECS, RegressionPolicy(absolute={"qq": 1.0}))


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


def _score(tmp_path, folder, db, metrics="toy_level,toy_snr,toy_asr"):
    from speechqe.cli.main import app
    from speechqe.store import Store

    res = CliRunner().invoke(app, ["score", str(folder), "--ref", str(tmp_path / "ref"), "--text",
                                   str(tmp_path / "t.tsv"), "--metrics", metrics, "--db", str(db),
                                   "--name", "nightly", "--progress", "none"])
    assert res.exit_code == 0, res.output
    with Store(db, read_only=True) as st:
        return st.run("latest")["run_id"]


def test_compare_command_gates_on_lost_output_and_refuses_empty_comparisons(tmp_path, toy_metrics):
    """The three silent passes of issue 16: a system gone from B, 5 of 8 items gone from B,
    and two runs with nothing in common; each used to exit 0 with '0 regression(s)'."""
    import shutil

    from speechqe.cli.main import app

    db, (a, _) = make_two_runs(tmp_path, toy_metrics)
    shutil.copytree(tmp_path / "a" / "sys_a", tmp_path / "c" / "sys_a")  # sys_b is gone
    c = _score(tmp_path, tmp_path / "c", db)
    shutil.copytree(tmp_path / "a", tmp_path / "d")
    for k in range(3, 8):  # 5 of sys_b's 8 items are gone
        (tmp_path / "d" / "sys_b" / f"u{k}.wav").unlink()
    d = _score(tmp_path, tmp_path / "d", db)
    shutil.copytree(tmp_path / "a" / "sys_a", tmp_path / "e" / "other")  # another system
    e = _score(tmp_path, tmp_path / "e", db, metrics="toy_level")
    runner = CliRunner()

    res = runner.invoke(app, ["compare", a, c, "--db", str(db), "--fail-on-regression"])
    out = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "missing in B (8 items in A)" in out and "REGRESSION" in out
    n_sys_b_outputs = 4  # toy_snr, toy_peak_db, toy_rms_db, toy_wer
    assert f"{n_sys_b_outputs} regression(s) ({n_sys_b_outputs} with lost output)" in out
    res = runner.invoke(app, ["compare", a, c, "--db", str(db), "--fail-on-regression",
                              "--allow-missing"])
    assert res.exit_code == 0 and "0 regression(s)" in res.output and "(allowed)" in res.output

    res = runner.invoke(app, ["compare", a, d, "--db", str(db), "--json", "--fail-on-regression"])
    assert res.exit_code == 1
    js = json.loads(res.output)
    snr = {(ch["system"], ch["metric"]): ch for ch in js["changes"]}[("sys_b", "toy_snr")]
    assert (snr["n_paired"], snr["n_a"], snr["n_b"], snr["n_missing"]) == (3, 8, 3, 5)
    assert snr["lost_items"] == [f"sys_b/u{k}" for k in range(3, 8)] and snr["flag"] == "regression"
    assert snr["delta"] == 0.0 and snr["mean_a"] == snr["mean_b"]  # the same 3 items, unchanged
    assert "sys_b / toy_snr: 5 of 8 items missing in B" in js["gate_failures"]

    for extra in ([], ["--allow-missing"], ["--json"]):
        res = runner.invoke(app, ["compare", a, e, "--db", str(db), *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert "no system and metric in common" in " ".join(res.output.split())
    res = runner.invoke(app, ["compare", a, c, "--db", str(db), "--threshold", "toy_snrr=1"])
    assert res.exit_code == 2 and "did you mean 'toy_snr'" in res.output
    # the report is no gate: it is written, and says that nothing could be compared
    res = runner.invoke(app, ["report", e, "--baseline", a, "--db", str(db), "--out",
                              str(tmp_path / "e.html")])
    assert res.exit_code == 0 and "no system and metric in common" in " ".join(res.output.split())


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


def test_report_and_dashboard_show_lost_output_and_empty_comparisons(tmp_path, toy_metrics):
    """The report's comparison shows what the run lost against its baseline (and flags it),
    and says so when nothing could be compared, instead of 'no regression'."""
    import shutil

    from speechqe.engine.report import write_report
    from speechqe.engine.report.server import Dashboard
    from speechqe.store import Store

    db, (a, _) = make_two_runs(tmp_path, toy_metrics)
    shutil.copytree(tmp_path / "a" / "sys_a", tmp_path / "c" / "sys_a")  # sys_b is gone
    c = _score(tmp_path, tmp_path / "c", db)
    shutil.copytree(tmp_path / "a" / "sys_a", tmp_path / "e" / "other")
    e = _score(tmp_path, tmp_path / "e", db, metrics="toy_level")
    with Store(db) as st:
        path, _ = write_report(st, c, tmp_path / "c.html", baseline=a)
        html = " ".join(path.read_text().split())
        assert "lost in this run" in html and "missing in B (8 items in A)" in html
        assert "lost output in" in html and "no regression" not in html
        path, _ = write_report(st, e, tmp_path / "e.html", baseline=a)
        html = " ".join(path.read_text().split())
        assert "nothing compared" in html and "no system and metric in common" in html
    page = " ".join(Dashboard(db).compare_page(a, e).split())
    assert "nothing compared" in page and "no system and metric in common" in page
