"""Scoring tasks on Dask (a LocalCluster of two worker processes, through prefect-dask) store
exactly the records of a serial run."""

from __future__ import annotations

import pytest

from speechqe.store import Store

from .conftest import make_set
from .test_evaluate_flow import METRICS, _same, _strip


@pytest.mark.slow
def test_dask_local_cluster_equals_serial_run(tmp_path, prefect_api, toy_metrics):
    from speechqe.flows.evaluate import evaluate_speech_set, evaluate_with

    s = make_set(tmp_path, n=8)
    (s["gen"] / "sys_b" / "broken.wav").write_bytes(b"RIFF0000WAVE")  # an error record
    kw = dict(source=str(s["gen"]), references=str(s["ref"]), transcripts=str(s["text"]),
              metrics=METRICS, chunk_size=3, report=False)
    serial = evaluate_speech_set(**kw, store=str(tmp_path / "serial.duckdb"))
    dask = evaluate_with(dask_workers=2)(**kw, store=str(tmp_path / "dask.duckdb"))
    assert serial["status"] == dask["status"] == "finished"
    assert dask["n_scored_items"] == dask["n_items"] == 17
    with Store(tmp_path / "serial.duckdb", read_only=True) as a, \
            Store(tmp_path / "dask.duckdb", read_only=True) as b:
        ra, rb = _strip(a.results(serial["run_id"])), _strip(b.results(dask["run_id"]))
    assert len(ra) == 17 * 4 and sum(r["status"] == "error" for r in rb) == 4
    _same(ra, rb)
