"""`speechqe mos evaluate` reproduces a hand-computed example (VoiceMOS/SHEET definitions)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_tone
from speechqe.cli.mos import app
from speechqe.predictors.evaluate import evaluate, scores

# Six utterances of three systems.
#   system A: true 2.0, 3.0   predicted 2.5, 2.5
#   system B: true 4.0, 4.5   predicted 4.0, 3.5
#   system C: true 1.0, 1.5   predicted 2.0, 1.0
TRUE = [2.0, 3.0, 4.0, 4.5, 1.0, 1.5]
PRED = [2.5, 2.5, 4.0, 3.5, 2.0, 1.0]
SYS = ["A", "A", "B", "B", "C", "C"]

# Hand computation (exact fractions):
# utterance MSE = (1/4 + 1/4 + 0 + 1 + 1 + 1/4) / 6 = 11/24
# utterance LCC: sums of products of deviations: cov = 77/12, var_t = 59/6, var_p = 137/24
# utterance SRCC: ranks t = (3,4,5,6,1,2), p = (3.5,3.5,6,5,2,1) (A's tie shares 3.5);
#   Pearson of ranks = 15 / sqrt(17.5 * 17)
# utterance KTAU (tau-b): 15 pairs; 12 concordant, 2 discordant, 1 tied in p only (A1,A2):
#   (12 - 2) / sqrt((12 + 2 + 0) * (12 + 2 + 1)) = 10 / sqrt(210)
# system means: A (2.5, 2.5), B (4.25, 3.75), C (1.25, 1.5)
# system MSE = (0 + 1/4 + 1/16) / 3 = 5/48; LCC = (163/48) / sqrt(109/24 * 61/24);
# system SRCC = KTAU = 1 (same order C < A < B)
EXPECTED = {
    "utterance": {"MSE": 11 / 24, "LCC": (77 / 12) / math.sqrt(59 / 6 * 137 / 24),
                  "SRCC": 15 / math.sqrt(17.5 * 17), "KTAU": 10 / math.sqrt(210)},
    "system": {"MSE": 5 / 48, "LCC": (163 / 48) / math.sqrt(109 / 24 * 61 / 24), "SRCC": 1.0, "KTAU": 1.0},
}


def test_functional_metrics_match_hand_computation():
    ev = evaluate(TRUE, PRED, SYS, bootstrap=0)
    for level in ("utterance", "system"):
        for m, v in EXPECTED[level].items():
            assert getattr(ev, level)[m] == pytest.approx(v, abs=1e-12), (level, m)


def test_cli_reproduces_the_example(tmp_path):
    rows = []
    for i, (t, s) in enumerate(zip(TRUE, SYS)):
        write_tone(tmp_path / "wav" / f"u{i}.wav", seconds=0.2, seed=i)
        rows.append({"wav_path": f"wav/u{i}.wav", "system_id": s, "sample_id": f"u{i}", "avg_score": t})
    with open(tmp_path / "test.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "pred.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "prediction"])
        w.writerows([f"u{i}", p] for i, p in enumerate(PRED))
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "test.csv"), "--format", "sheet",
                                   "--predictions", str(tmp_path / "pred.csv"), "--bootstrap", "200",
                                   "--json", str(tmp_path / "out.json")])
    assert res.exit_code == 0, res.output
    assert "0.4583" in res.output and "0.8565" in res.output  # MSE and LCC in the table
    out = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert out["n_items"] == 6 and out["n_systems"] == 3
    for level in ("utterance", "system"):
        for m, v in EXPECTED[level].items():
            assert out[level][m] == pytest.approx(v, abs=1e-12)
        for m in ("MSE", "LCC", "SRCC", "KTAU"):
            lo, hi = out["ci"][level][m]
            assert lo <= hi
    # the official system MOS, when given, replaces the per-system means of the set
    (tmp_path / "sys.csv").write_text("system_ID,mean\nA,2.5\nB,4.0\nC,1.5\n")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "test.csv"), "--predictions",
                                   str(tmp_path / "pred.csv"), "--system-mos", str(tmp_path / "sys.csv"),
                                   "--bootstrap", "0", "--json", str(tmp_path / "out2.json")])
    assert res.exit_code == 0, res.output
    sysm = json.loads((tmp_path / "out2.json").read_text())["predictions"]["system"]
    assert sysm["MSE"] == pytest.approx((0 + 0.0625 + 0) / 3)


def test_missing_predictions_are_counted_not_dropped_silently(tmp_path):
    write_tone(tmp_path / "a.wav", seconds=0.2)
    (tmp_path / "t.csv").write_text("wav_path,system_id,sample_id,avg_score\na.wav,S,x,3\na.wav,S,y,4\na.wav,T,z,2\n")
    (tmp_path / "p.csv").write_text("id,pred\nx,3.1\nz,2.5\n")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "t.csv"), "-p", str(tmp_path / "p.csv"),
                                   "--bootstrap", "0", "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o.json").read_text())["predictions"]
    assert out["n_missing"] == 1 and out["missing"] == ["y"] and out["n_items"] == 2


def test_degenerate_inputs():
    s = scores([3.0, 3.0], [1.0, 2.0])
    assert s["MSE"] == pytest.approx(2.5) and np.isnan(s["SRCC"])
    with pytest.raises(ValueError):
        evaluate([1.0, np.nan], [1.0, 2.0], ["a", "b"])


def test_ids_that_do_not_match_are_an_error_showing_both_forms(tmp_path):
    """Issue 16: predictions written with folder ids (``snr00/LJ001-0008``) against a CSV of
    ``snr00-LJ001-0008`` used to give an all-NaN table and exit 0."""
    write_tone(tmp_path / "a.wav", seconds=0.2)
    ids = [f"snr{k:02d}-LJ001-000{k}" for k in range(4)]
    (tmp_path / "t.csv").write_text("wav_path,system_id,sample_id,avg_score\n"
                                    + "".join(f"a.wav,S{k},{i},{k + 1}\n" for k, i in enumerate(ids)))
    (tmp_path / "p.csv").write_text("sample_id,prediction\n"
                                    + "".join(f"{i.replace('-', '/', 1)},{k}\n" for k, i in enumerate(ids)))
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "t.csv"), "-p", str(tmp_path / "p.csv"),
                                   "--bootstrap", "0"])
    assert res.exit_code != 0, res.output
    out = " ".join(res.output.split())
    assert "only 0 of 4 labelled items have a prediction" in out
    assert "snr00-LJ001-0000" in out and "snr00/LJ001-0000" in out
    assert "4 of them match once '/'" in out
    # a partial file above the stated share still evaluates, counting the missing ones
    (tmp_path / "p2.csv").write_text("sample_id,prediction\n" + "".join(f"{i},{k}\n" for k, i in enumerate(ids[:3])))
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "t.csv"), "-p", str(tmp_path / "p2.csv"),
                                   "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "t.csv"), "-p", str(tmp_path / "p2.csv"),
                                   "--bootstrap", "0", "--min-match", "0.9"])
    assert res.exit_code != 0 and "at least 90% must match" in " ".join(res.output.split())
