"""One scoring path: `speechqe score` and `speechqe evaluate` (the Prefect flow) both call
speechqe.engine.evaluation.evaluate and store identical records."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLES

def _records(db: Path) -> list[tuple]:
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        rows = st.results(st.run("latest")["run_id"])
    keep = ("item_id", "system", "metric", "metric_version", "model_id", "status", "error_type",
            "value")
    return sorted(tuple(r[k] for k in keep) for r in rows)


@pytest.mark.slow
def test_score_and_evaluate_give_identical_records_on_the_demo_set(tmp_path, prefect_api):
    """Both commands go through speechqe.engine.evaluation.evaluate: the same records."""
    from typer.testing import CliRunner

    from speechqe.cli.main import app

    common = [str(SAMPLES / "systems"), "--ref", str(SAMPLES / "reference"), "--text",
              str(SAMPLES / "transcripts.tsv"), "--metrics", "pesq,si_sdr,lsd,wer",
              "--device", "cpu"]
    runner = CliRunner()
    a = runner.invoke(app, ["score", *common, "--db", str(tmp_path / "score.duckdb")])
    assert a.exit_code == 0, a.output
    b = runner.invoke(app, ["evaluate", *common, "--db", str(tmp_path / "evaluate.duckdb"),
                            "--no-report"])
    assert b.exit_code == 0, b.output
    ra, rb = _records(tmp_path / "score.duckdb"), _records(tmp_path / "evaluate.duckdb")
    assert len(ra) == 30 * (1 + 1 + 1 + 2) and ra == rb  # wer: corpus + per-utterance mean
