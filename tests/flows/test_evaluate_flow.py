"""The evaluate-speech-set flow end to end on the session's Prefect API: same records as the
library run, reruns skip stored work, changed files are rescored, failures and bad parameters
are recorded, artifacts are published, GPU tasks respect their concurrency limit."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import write_tone

from speechqe import manifest
from speechqe.engine import runner
from speechqe.store import Store

from .conftest import make_set

METRICS = ["toy_level", "toy_snr", "toy_rate"]


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _task_runs(flow_run_id: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as c:
        return c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _strip(rows):
    return sorted(({k: v for k, v in r.items() if k != "run_id"} for r in rows),
                  key=lambda r: (r["item_id"], r["metric"]))


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and math.isnan(x[k]):
                assert math.isnan(y[k]), k
            else:
                assert x[k] == y[k], (k, x, y)


def test_flow_scores_reruns_rescores_changes_and_publishes(tmp_path, prefect_api, toy_metrics):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from speechqe.flows.evaluate import evaluate_speech_set

    s = make_set(tmp_path)
    (s["gen"] / "sys_a" / "broken.wav").write_text("not audio")  # an error record, not a failure
    db = tmp_path / "flow.duckdb"
    kw = dict(source=str(s["gen"]), references=str(s["ref"]), transcripts=str(s["text"]),
              metrics=METRICS, store=str(db), chunk_size=2)

    first = evaluate_speech_set(**kw)
    assert first["status"] == "finished" and first["n_items"] == 13 and first["n_scored_items"] == 13
    assert Path(first["report"]).is_file() and first["baseline"] is None

    # The flow stores exactly what the library run stores.
    sset = manifest.load_speech_set(s["gen"], ref_dir=s["ref"], text_file=s["text"])
    with Store(tmp_path / "lib.duckdb") as st:
        lib = st.results(runner.score(sset, runner.requests_from([(m, {}) for m in METRICS]), st).run_id)
    with Store(db, read_only=True) as st:
        run1 = st.run(first["run_id"])
        _same(_strip(st.results(first["run_id"])), _strip(lib))
    assert run1["flow_run_id"] and run1["status"] == "finished" and run1["suite"] is None
    assert json.loads(run1["params"])["metrics"] == METRICS

    with _client() as c:
        fr = c.read_flow_run(run1["flow_run_id"])
        assert fr.state.is_completed()
        assert fr.name.startswith("gen-toy_level+toy_snr+toy_rate-")  # built from parameters
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["speechqe-gen"])))
        links = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["speechqe-gen-report"])))
    assert arts and "| toy\\_snr ↑ |" in arts[0].data and "sys\\_a" in arts[0].data
    assert links and Path(first["report"]).resolve().as_uri() in links[0].data
    scored = [t for t in _task_runs(run1["flow_run_id"]) if t.name.startswith("score-")]
    assert len(scored) == 7  # 13 items in chunks of 2

    # A rerun submits no scoring task and reuses every record; it compares with run 1.
    second = evaluate_speech_set(**kw)
    assert (second["n_scored_items"], second["n_reused_items"]) == (0, 13)
    assert second["baseline"] == first["run_id"] and second["regressions"] == []
    with Store(db, read_only=True) as st:
        fr2 = st.run(second["run_id"])["flow_run_id"]
    assert not [t for t in _task_runs(fr2) if t.name.startswith("score-")]

    # A changed file is a new content hash: exactly that item is scored again.
    write_tone(s["gen"] / "sys_b" / "u3.wav", seconds=0.4, freq=300, seed=999)
    third = evaluate_speech_set(**kw)
    assert (third["n_scored_items"], third["n_reused_items"]) == (1, 12)

    # Nothing changed since: a scheduled run records nothing new.
    fourth = evaluate_speech_set(**kw, skip_unchanged=True)
    assert fourth["status"] == "unchanged" and fourth["run_id"] == third["run_id"]
    with Store(db, read_only=True) as st:
        assert len(st.runs()) == 3


def test_failures_and_bad_parameters_are_recorded(tmp_path, prefect_api, toy_metrics):
    from speechqe.flows.evaluate import evaluate_speech_set

    db = tmp_path / "f.duckdb"
    state = evaluate_speech_set(source=str(tmp_path / "nowhere"), metrics=["toy_level"],
                                store=str(db), return_state=True)
    assert state.is_failed() and "no such file or folder" in state.message
    with Store(db, read_only=True) as st:
        (failed,) = st.runs()
    assert failed["status"] == "failed" and "no such file or folder" in failed["error"]
    assert failed["name"] == "nowhere" and failed["flow_run_id"]

    write_tone(tmp_path / "g" / "u.wav", seed=1)
    for bad, message in [({"chunk_size": 0}, "chunk_size: Input should be greater than or equal to 1"),
                         ({"device": "tpu"}, "device must be one of"),
                         ({"metrics": ["toy_level"], "suite": "default"}, "not both"),
                         ({"metrics": ["nope"]}, "unknown metric 'nope'"),
                         ({"params": {"toy_level": {"delay_s": "soon"}}},
                          "params.toy_level.delay_s: Input should be a valid number"),
                         ({"chunk_size": "many"}, "chunk_size"),
                         ({"metrics": ["toy_snr"]}, "needs references")]:
        kw = {"source": str(tmp_path / "g"), "store": str(db), "metrics": ["toy_level"], **bad}
        state = evaluate_speech_set(**kw, return_state=True)
        assert state.is_failed() and message in state.message, (bad, state.message)
    with Store(db, read_only=True) as st:  # a plan error is a recorded failed run too
        assert "needs references" in st.runs()[-1]["error"]
        # configuration errors (unknown metric, bad parameter) stop the flow before the store
        assert not any("unknown metric" in (r["error"] or "") for r in st.runs())


def test_gpu_scoring_tasks_are_tagged_and_limited(tmp_path, prefect_api, toy_metrics, monkeypatch):
    """With the GPU path forced on, scoring tasks carry the tag and a 1-slot limit keeps two
    threads from scoring at once."""
    from prefect.client.orchestration import get_client
    from prefect.task_runners import ThreadPoolTaskRunner

    from speechqe.flows import evaluate as ev

    for k in range(4):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.2, seed=k)
    from plugins.toy_metrics import Concurrency

    monkeypatch.setattr(ev.runner, "uses_gpu", lambda requests, device: True)
    Concurrency.reset()
    flow = ev.evaluate_speech_set.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    out = flow(source=str(tmp_path / "g"), metrics=["toy_level"], store=str(tmp_path / "g.duckdb"),
               chunk_size=1, gpu_slots=1, params={"toy_level": {"delay_s": 0.2}}, report=False)
    with Store(tmp_path / "g.duckdb", read_only=True) as st:
        fr = st.run(out["run_id"])["flow_run_id"]
    runs = [t for t in _task_runs(fr) if t.name.startswith("score-")]
    assert len(runs) == 4 and all(ev.GPU_TAG in t.tags for t in runs)
    # never two at once: counted inside the metric while it works (2 threads were available)
    assert Concurrency.max_active == 1 and Concurrency.active == 0
    with get_client(sync_client=True) as c:
        assert c.read_global_concurrency_limit_by_name(f"tag:{ev.GPU_TAG}").limit == 1


def test_evaluate_command_runs_the_flow(tmp_path, prefect_api, toy_metrics):
    from typer.testing import CliRunner

    from speechqe.cli.main import app

    s = make_set(tmp_path, n=2)
    db = tmp_path / "cli.duckdb"
    args = ["evaluate", str(s["gen"]), "--ref", str(s["ref"]), "--metrics", "toy_level,toy_snr",
            "--db", str(db), "--name", "cli-set"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "toy_snr ↑" in res.output and "report: " in res.output
    report = res.output.split("report: ")[1].strip()
    assert Path(report).is_file() and Path(report).parent == tmp_path / "reports"
    res = CliRunner().invoke(app, args + ["--skip-unchanged"])
    assert res.exit_code == 0 and "nothing changed since run" in res.output
    res = CliRunner().invoke(app, args + ["--device", "tpu"])
    assert res.exit_code == 2 and "device must be one of" in res.output


def test_evaluate_reads_the_same_inputs_as_score(tmp_path, prefect_api, toy_metrics, monkeypatch):
    """--format, --allow-pipes, --text-encoding and --versa-config reach the flow through
    EvaluationConfig: a Kaldi list with a pipe and a latin-1 transcript, and a VERSA config."""
    from typer.testing import CliRunner

    from speechqe.cli.main import app

    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    write_tone(tmp_path / "a.wav", seed=1)
    write_tone(tmp_path / "b.wav", seed=2)
    d = tmp_path / "data" / "test"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(f"a cat {tmp_path / 'a.wav'} |\nb {tmp_path / 'b.wav'}\n")
    (d / "text").write_bytes("a caf\xe9\nb na\xefve\n".encode("latin-1"))
    db = tmp_path / "e.duckdb"
    base = ["evaluate", str(d), "--metrics", "toy_level,toy_rate", "--db", str(db), "--no-report"]
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 2 and "--allow-pipes" in res.output
    res = CliRunner().invoke(app, base + ["--allow-pipes", "--format", "kaldi",
                                          "--text-encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    with Store(db, read_only=True) as st:
        items = {i["item_id"]: i for i in st.items(st.run("latest")["run_id"])}
    assert items["a"]["text"] == "café" and items["b"]["text"] == "naïve"
    cfg = tmp_path / "score.yaml"
    cfg.write_text("- name: signal_metric\n- name: nisqa\n")
    write_tone(tmp_path / "ref" / "a.wav", seed=3)
    write_tone(tmp_path / "ref" / "b.wav", seed=4)
    res = CliRunner().invoke(app, ["evaluate", str(d), "--ref", str(tmp_path / "ref"),
                                   "--versa-config", str(cfg), "--allow-pipes", "--db", str(db),
                                   "--no-report", "--text-encoding", "latin-1"])
    assert res.exit_code == 0, res.output
    with Store(db, read_only=True) as st:
        run = st.run("latest")
        metrics = {r["metric"] for r in st.results(run["run_id"])}
    assert run["suite"] == "versa:score.yaml" and metrics == {"si_sdr"}


def test_the_flow_gate_fails_on_lost_output_and_on_nothing_in_common(tmp_path, prefect_api,
                                                                      toy_metrics):
    """``fail_on_regression`` uses the same comparison as ``speechqe compare``: a system gone
    from the set fails the flow run (unless lost output is allowed), and a baseline with no
    system and metric in common fails it too (it used to pass as '0 regressions')."""
    import shutil

    from speechqe.flows.evaluate import evaluate_speech_set

    s = make_set(tmp_path, n=3)
    kw = dict(metrics=["toy_level", "toy_snr"], references=str(s["ref"]),
              store=str(tmp_path / "g.duckdb"), name="nightly", fail_on_regression=True)
    first = evaluate_speech_set(source=str(s["gen"]), **kw)
    assert first["gate_failures"] == [] and first["baseline"] is None
    shutil.rmtree(s["gen"] / "sys_b")
    state = evaluate_speech_set(source=str(s["gen"]), **kw, return_state=True)
    assert state.is_failed(), state.message
    assert "sys_b / toy_snr: missing in B (3 items in A)" in state.message
    relaxed = evaluate_speech_set(source=str(s["gen"]), **kw, baseline=first["run_id"],
                                  regression_allow_missing=True)
    assert relaxed["gate_failures"] == [] and relaxed["regressions"] == []
    shutil.copytree(s["gen"] / "sys_a", tmp_path / "other" / "zzz")
    state = evaluate_speech_set(source=str(tmp_path / "other"), **kw, baseline=first["run_id"],
                                regression_allow_missing=True, return_state=True)
    assert state.is_failed() and "no system and metric in common" in state.message
