"""The runner: every (item, metric) gets a record; failures are isolated and typed; reruns
skip what is stored; worker processes give the same records as a serial run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone

from speechqe import manifest
from speechqe.engine import runner
from speechqe.engine.aggregate import aggregate
from speechqe.errors import ConfigError
from speechqe.store import Store
from speechqe.suites import SuiteEntry


def _bad_folder(root):
    """Good files beside a corrupt FLAC, a truncated WAV header, an empty file, a silent file,
    a file with NaN samples and a text file renamed .wav; every one has a reference."""
    gen, ref = root / "gen" / "sys", root / "ref"
    for k in range(3):
        write_tone(gen / f"good{k}.wav", seed=k)
        write_tone(ref / f"good{k}.wav", seed=k)
    write_tone(gen / "corrupt.flac", seed=5)
    data = bytearray((gen / "corrupt.flac").read_bytes())
    for k in range(len(data) // 3, len(data), 97):  # flip bytes inside the audio frames
        data[k] ^= 0xFF
    (gen / "corrupt.flac").write_bytes(bytes(data))
    (gen / "truncated.wav").write_bytes((gen / "good0.wav").read_bytes()[:30])
    (gen / "empty.wav").write_bytes(b"")
    sf.write(gen / "silent.wav", np.zeros(8000, np.float32), 16000)
    nan = np.full(8000, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(gen / "nan.wav", nan, 16000, subtype="FLOAT")
    (gen / "notes.wav").write_text("these are my notes, not audio\n" * 10)
    for name in ("corrupt", "truncated", "empty", "silent", "nan", "notes"):
        write_tone(ref / f"{name}.wav", seed=9)
    return root / "gen", ref


def _metrics(reg, *names):
    return [reg.create(n) for n in names]


def test_bad_files_are_recorded_and_good_files_scored(tmp_path, toy_metrics):
    gen, ref = _bad_folder(tmp_path)
    sset = manifest.from_folder(gen).with_references(ref)
    with Store(tmp_path / "s.duckdb") as st:
        res = runner.score(sset, _metrics(toy_metrics, "toy_level", "toy_snr"), st)
        rows = st.results(res.run_id)
    by = {}
    for r in rows:
        by.setdefault(r["item_id"].split("/")[-1], []).append(r)
    assert len(rows) == 9 * 3  # 9 items x (2 level outputs + 1 snr)
    for k in range(3):
        assert all(r["status"] == "ok" and np.isfinite(r["value"]) for r in by[f"good{k}"])
    expected = {"corrupt": "unreadable", "truncated": "unreadable", "empty": "empty",
                "silent": "silent", "nan": "non_finite", "notes": "unreadable"}
    for name, code in expected.items():
        assert {r["error_type"] for r in by[name]} == {code}, name
        assert all(r["status"] == "error" and math.isnan(r["value"]) and r["error"] for r in by[name])
    assert res.status == "finished"


def test_rerun_skips_stored_records_and_new_metric_adds_only_itself(tmp_path, toy_metrics):
    for k in range(5):
        write_tone(tmp_path / "g" / f"u{k}.wav", seed=k)
    sset = manifest.from_folder(tmp_path / "g")
    with Store(tmp_path / "s.duckdb") as st:
        r1 = runner.score(sset, _metrics(toy_metrics, "toy_level"), st)
        r2 = runner.score(sset, _metrics(toy_metrics, "toy_level"), st)
        assert (r1.n_scored_items, r2.n_scored_items, r2.n_reused_items) == (5, 0, 5)
        assert st.results(r1.run_id) == [
            {**r, "run_id": r1.run_id} for r in st.results(r2.run_id)
        ]
        # a changed parameter is a different model id: rescored
        r3 = runner.score(sset, [toy_metrics.create("toy_level", {"delay_s": 0.0001})], st)
        assert r3.n_scored_items == 5
        assert st.run(r3.run_id)["n_records"] == 10


def test_unexpected_exceptions_are_isolated_per_item(tmp_path, toy_metrics):
    for name in ("a", "boom", "c", "range"):
        write_tone(tmp_path / "g" / f"{name}.wav", seed=len(name))
    sset = manifest.from_folder(tmp_path / "g")
    with Store(tmp_path / "s.duckdb") as st:
        res = runner.score(sset, _metrics(toy_metrics, "toy_broken"), st, chunk_size=4)
        rows = {r["item_id"]: r for r in st.results(res.run_id)}
    assert rows["a"]["value"] == 0.5 and rows["c"]["value"] == 0.5
    assert rows["boom"]["error_type"] == "unexpected" and "RuntimeError: kaboom" in rows["boom"]["error"]
    assert rows["range"]["error_type"] == "metric_failed" and "outside its valid range" in rows["range"]["error"]


def test_missing_reference_and_text_per_item(tmp_path, toy_metrics):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    write_tone(tmp_path / "g" / "u2.wav", seed=2)
    write_tone(tmp_path / "r" / "u1.wav", seed=1)
    (tmp_path / "t.tsv").write_text("u1\tone two three\n")
    sset = manifest.from_folder(tmp_path / "g").with_references(tmp_path / "r").with_transcripts(tmp_path / "t.tsv")
    with Store(tmp_path / "s.duckdb") as st:
        res = runner.score(sset, _metrics(toy_metrics, "toy_snr", "toy_rate"), st)
        rows = {(r["item_id"], r["metric"]): r for r in st.results(res.run_id)}
    assert rows[("u1", "toy_snr")]["value"] > 30
    assert rows[("u2", "toy_snr")]["error_type"] == "missing_reference"
    assert rows[("u2", "toy_words_per_s")]["error_type"] == "missing_text"
    assert rows[("u1", "toy_words_per_s")]["value"] == pytest.approx(3 / 0.5)


def test_input_key_follows_reference_and_text(tmp_path, toy_metrics):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    it = manifest.from_folder(tmp_path / "g")["u1"]
    snr, level, rate = _metrics(toy_metrics, "toy_snr", "toy_level", "toy_rate")
    assert runner.input_key(it, level) == it.sha256
    a = runner.input_key(it.replace(ref_sha256="r1"), snr)
    assert a != runner.input_key(it.replace(ref_sha256="r2"), snr)
    assert runner.input_key(it.replace(text="a"), rate) != runner.input_key(it.replace(text="b"), rate)


def test_workers_equal_serial(tmp_path, toy_metrics):
    (tmp_path / "r").mkdir()
    for k in range(12):
        x = write_tone(tmp_path / "g" / f"s{k % 2}" / f"u{k}.wav", seconds=0.2 + 0.05 * k, seed=k)
        sf.write(tmp_path / "r" / f"u{k}.wav", x * 0.9, 16000, subtype="PCM_16")
    sset = manifest.from_folder(tmp_path / "g").with_references(tmp_path / "r")
    reqs = runner.requests_from([("toy_level", {}), ("toy_snr", {})])
    with Store(tmp_path / "a.duckdb") as st:
        serial = st.results(runner.score(sset, reqs, st, chunk_size=3).run_id)
    with Store(tmp_path / "b.duckdb") as st:
        par = st.results(runner.score(sset, reqs, st, workers=2, chunk_size=3).run_id)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run_id"} for r in rows]  # noqa: E731
    assert strip(serial) == strip(par) and len(serial) == 36


def test_plan_metrics_skips_or_refuses(tmp_path, toy_metrics):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    sset = manifest.from_folder(tmp_path / "g")
    entries = [SuiteEntry("toy_level"), SuiteEntry("toy_snr"), SuiteEntry("toy_rate")]
    plan = runner.plan_metrics(entries, sset, explicit=False)
    assert [r.ref for r in plan.requests] == ["toy_level"]
    assert {n for n, _ in plan.skipped} == {"toy_snr", "toy_rate"}
    with pytest.raises(ConfigError, match="needs references"):
        runner.plan_metrics(entries, sset, explicit=True)
    with pytest.raises(ConfigError, match="unknown parameter"):
        runner.plan_metrics([SuiteEntry("toy_level", (("bogus", 1),))], sset, explicit=True)
    with pytest.raises(ConfigError, match="unknown metric"):
        runner.plan_metrics([SuiteEntry("nope")], sset, explicit=True)
    with pytest.raises(ConfigError, match="--param given for metrics not in this run"):
        runner.plan_metrics(entries[:1], sset, explicit=False, overrides={"toy_snr": {"x": 1}})


def test_ratio_aggregation_is_sum_over_sum(toy_metrics):
    rows = [
        {"system": "A", "metric": "toy_words_per_s", "value": 1.0, "status": "ok", "extra": {"words": 1, "seconds": 1}},
        {"system": "A", "metric": "toy_words_per_s", "value": 3.0, "status": "ok", "extra": {"words": 9, "seconds": 3}},
        {"system": "A", "metric": "toy_words_per_s", "value": math.nan, "status": "error", "extra": {}},
    ]
    (a, _all) = aggregate(rows)
    assert a.aggregation == "ratio" and a.mean == pytest.approx(10 / 4) and a.n == 2 and a.n_errors == 1
    assert a.ci_low <= a.mean <= a.ci_high


def test_run_steps_score_anywhere_and_equal_score(tmp_path, toy_metrics):
    """start_run -> work(k) -> score_work_with (cached metrics) -> commit -> finish, as the
    flows use them, stores the same records as score(); the run records the assets loaded."""
    for k in range(5):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.2 + 0.1 * k, seed=k)
        write_tone(tmp_path / "r" / f"u{k}.wav", seconds=0.2 + 0.1 * k, seed=k + 9)
    sset = manifest.from_folder(tmp_path / "g").with_references(tmp_path / "r")
    reqs = runner.requests_from([("toy_level", {}), ("toy_snr", {}), ("toy_asset", {})])
    with Store(tmp_path / "a.duckdb") as st:
        ref = st.results(runner.score(sset, reqs, st, chunk_size=2).run_id)
    with Store(tmp_path / "b.duckdb") as st:
        run = runner.start_run(sset, reqs, st, device="cpu", chunk_size=2, reuse_loaded=True)
        assert len(run.chunks) == 3 and all(len(run.work(k)) <= 2 for k in range(3))
        for k in reversed(range(len(run.chunks))):  # any order
            run.commit(runner.score_work_with(reqs, "cpu", run.work(k)))
        res = run.finish("finished")
        got = st.results(res.run_id)
        stored = st.run(res.run_id)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run_id"} for r in rows]  # noqa: E731
    assert strip(got) == strip(ref)
    assert json.loads(stored["assets"])["dnsmos-p835"]["source"] == "package"
    assert stored["set_hash"] == sset.content_hash()
    # the cached metrics stay loaded for later chunks and runs in this process
    first = runner.cached_metrics(reqs, "cpu")[0]
    assert runner.cached_metrics(reqs, "cpu")[0] is first and all(m._ready for m in first)
    runner.clear_metric_cache()


def test_one_undefined_output_is_an_error_record_beside_the_others(tmp_path):
    """ItemScore.errors: one output fails with its reason, the others are stored."""

    from speechqe.errors import MetricComputationError
    from speechqe.metric import ItemScore, Metric, MetricSpec, OutputSpec

    class Partial(Metric):
        spec = MetricSpec(name="partial", version="1", outputs=(
            OutputSpec("part_a", higher_is_better=True), OutputSpec("part_b", higher_is_better=True)))

        def score_item(self, inp):
            return ItemScore({"part_a": 1.0}, errors={"part_b": MetricComputationError("undefined here")})

    write_tone(tmp_path / "g" / "u.wav", seed=1)
    sset = manifest.from_folder(tmp_path / "g")
    with Store(tmp_path / "s.duckdb") as st:
        rows = {r["metric"]: r for r in st.results(runner.score(sset, [Partial()], st).run_id)}
    assert rows["part_a"]["value"] == 1.0 and rows["part_a"]["status"] == "ok"
    assert rows["part_b"]["status"] == "error" and rows["part_b"]["error"] == "undefined here"
    assert rows["part_b"]["error_type"] == "metric_failed"


def test_prompts_alone_satisfy_a_prompt_as_reference_metric(tmp_path, toy_metrics):
    import json

    from speechqe.plugins import get

    write_tone(tmp_path / "a.wav", seed=1)
    write_tone(tmp_path / "p.wav", seed=2)
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.wav", "prompt_path": "p.wav"}) + "\n")
    sset = manifest.from_jsonl(tmp_path / "m.jsonl")
    assert sset.has_prompts and not sset.has_references
    plan = runner.plan_metrics([SuiteEntry("speaker_sim"), SuiteEntry("toy_snr")], sset, explicit=False)
    assert [r.ref for r in plan.requests] == ["speaker_sim"]
    assert get("speaker_sim").spec.prompt_as_reference
    assert not get("toy_snr").spec.prompt_as_reference


def _all_records(st):
    return st.con.execute(
        "SELECT input_key, metric, status, value FROM scores ORDER BY input_key, metric"
    ).fetchall()


def test_retry_errors_rescores_stored_errors_only(tmp_path, toy_metrics):
    """A stored error is reused by a plain rerun (an unreadable file would fail the same way
    again) and rescored with retry_errors, replacing its record: one record per (item, metric),
    the ok items untouched."""
    for k in range(4):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.3 + 0.1 * k, seed=k)
    marker = tmp_path / "g" / "u2.wav.fail"
    marker.write_text("")
    sset = manifest.from_folder(tmp_path / "g")
    with Store(tmp_path / "s.duckdb") as st:
        r1 = runner.score(sset, _metrics(toy_metrics, "toy_flaky"), st)
        errors = {r["item_id"]: r["error_type"] for r in st.results(r1.run_id) if r["status"] == "error"}
        assert errors == {"u2": "metric_failed"}
        marker.unlink()  # the transient cause is gone
        r2 = runner.score(sset, _metrics(toy_metrics, "toy_flaky"), st)
        assert (r2.n_scored_items, r2.n_reused_items, r2.n_new_records) == (0, 4, 0)
        assert [r["status"] for r in st.results(r2.run_id) if r["item_id"] == "u2"] == ["error"]
        before = {k: v for k, m, s, v in _all_records(st) if s == "ok"}
        r3 = runner.score(sset, _metrics(toy_metrics, "toy_flaky"), st, retry_errors=True)
        assert (r3.n_scored_items, r3.n_reused_items, r3.n_new_records, r3.n_new_errors) == (1, 3, 1, 0)
        rows = _all_records(st)
        assert len(rows) == 4 and all(s == "ok" for _, _, s, _ in rows)
        assert {k: v for k, m, s, v in rows if k in before} == before
        u2 = [r for r in st.results(r3.run_id) if r["item_id"] == "u2"]
        assert len(u2) == 1 and u2[0]["value"] == pytest.approx(0.5, abs=1e-3)


def test_retry_errors_from_the_command_line(tmp_path, toy_metrics):
    from typer.testing import CliRunner

    from speechqe.cli.main import app

    for k in range(3):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.3, seed=k)
    (tmp_path / "g" / "u1.wav.fail").write_text("")
    db = tmp_path / "s.duckdb"
    cmd = ["score", str(tmp_path / "g"), "--metrics", "toy_flaky", "--db", str(db),
           "--progress", "none"]
    cli = CliRunner()
    first = cli.invoke(app, cmd)
    assert first.exit_code == 0 and "1 errors on 1 items" in " ".join(first.output.split())
    (tmp_path / "g" / "u1.wav.fail").unlink()
    plain = cli.invoke(app, cmd)
    assert "1 errors on 1 items" in " ".join(plain.output.split())  # reused, not rescored
    retried = cli.invoke(app, cmd + ["--retry-errors"])
    assert retried.exit_code == 0, retried.output
    assert "0 errors on 0 items" in " ".join(retried.output.split())
    with Store(db, read_only=True) as st:
        assert len(_all_records(st)) == 3


def test_ctrl_c_records_an_interrupted_run_that_a_rerun_completes(tmp_path, toy_metrics):
    """KeyboardInterrupt in the middle of a run: the committed chunks stay, the run is recorded
    'interrupted' (not 'finished', not lost), and a rerun scores only the rest."""
    for k in range(6):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.2 + 0.05 * k, seed=k)
    stop = tmp_path / "g" / "u0.wav.interrupt"  # the shortest item: scored last (costliest first)
    stop.write_text("")
    sset = manifest.from_folder(tmp_path / "g")
    with Store(tmp_path / "s.duckdb") as st:
        with pytest.raises(KeyboardInterrupt):
            runner.score(sset, _metrics(toy_metrics, "toy_flaky"), st, chunk_size=2)
        (run,) = st.runs()
        assert run["status"] == "interrupted"
        assert len(_all_records(st)) == 5  # what was scored before it was committed
        stop.unlink()
        r2 = runner.score(sset, _metrics(toy_metrics, "toy_flaky"), st, chunk_size=2)
        assert (r2.status, r2.n_scored_items, r2.n_reused_items) == ("finished", 1, 5)
        assert len(_all_records(st)) == 6


# --- length rules -------------------------------------------------------------------------------
def test_long_items_are_refused_before_decoding_or_streamed(tmp_path, toy_metrics, monkeypatch):
    """A 130 s file among short ones: whole-signal metrics (toy_level's default 120 s
    maximum) record ``too_long`` without the file being decoded; the windowed metric reads it
    window by window (streamed above the threshold) with the value of a full decode; the short
    items are scored as usual."""
    from speechqe import streaming
    from speechqe.audio import LoadedAudio, read

    long_x = write_tone(tmp_path / "g" / "long.wav", seconds=130.0, sr=8000, amp=0.3, seed=1)
    write_tone(tmp_path / "g" / "short.wav", seconds=0.5, seed=2)
    monkeypatch.setattr(runner, "STREAM_ABOVE_S", 100.0)
    real = LoadedAudio.from_file.__func__

    def no_long_decode(cls, path):
        assert Path(path).name != "long.wav", "the long file was decoded whole"
        return real(cls, path)

    monkeypatch.setattr(LoadedAudio, "from_file", classmethod(no_long_decode))
    sset = manifest.from_folder(tmp_path / "g")
    with Store(tmp_path / "s.duckdb") as st:
        res = runner.score(sset, _metrics(toy_metrics, "toy_level", "toy_windowed"), st)
        rows = {(r["item_id"], r["metric"]): r for r in st.results(res.run_id)}
    assert res.status == "finished"
    for out in ("toy_peak_db", "toy_rms_db"):
        r = rows[("long", out)]
        assert r["status"] == "error" and r["error_type"] == "too_long"
        assert "130.0 s is longer than the 120 s maximum of toy_level" in r["error"]
        assert rows[("short", out)]["status"] == "ok"
    win = rows[("long", "toy_window_peak_db")]
    assert win["status"] == "ok" and win["extra"] == {"streamed": True}
    x, _ = read(tmp_path / "g" / "long.wav")
    assert win["value"] == pytest.approx(20 * np.log10(float(np.abs(x).max())), abs=1e-9)
    assert np.abs(x).max() == pytest.approx(np.abs(long_x).max(), abs=1e-4)
    assert rows[("short", "toy_window_peak_db")]["extra"] == {"streamed": False}
    assert streaming.STREAM_ABOVE_S == 600.0  # only the runner's copy was lowered


def test_a_reference_longer_than_the_maximum_is_refused_too(tmp_path, toy_metrics):
    write_tone(tmp_path / "g" / "u.wav", seconds=0.5, seed=1)
    write_tone(tmp_path / "r" / "u.wav", seconds=121.0, sr=8000, seed=1)
    sset = manifest.from_folder(tmp_path / "g").with_references(tmp_path / "r")
    with Store(tmp_path / "s.duckdb") as st:
        rows = st.results(runner.score(sset, _metrics(toy_metrics, "toy_snr", "toy_level"), st).run_id)
    by = {r["metric"]: r for r in rows}
    assert by["toy_snr"]["error_type"] == "too_long" and "(reference)" in by["toy_snr"]["error"]
    assert by["toy_peak_db"]["status"] == "ok"  # does not use the reference


# --- runs link only what they computed ------------------------------------------------------------
def test_an_interrupted_run_never_shows_records_a_later_run_computed(tmp_path, toy_metrics):
    for k in range(6):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.2 + 0.05 * k, seed=k)
    sset = manifest.from_folder(tmp_path / "g")
    reqs = runner.requests_from([("toy_level", {})])
    with Store(tmp_path / "s.duckdb") as st:
        run = runner.start_run(sset, reqs, st, chunk_size=2)
        run.commit(runner.score_work(run.work(0), run.metrics))  # 2 of 6 items, then Ctrl-C
        first = run.finish("interrupted")
        assert len(st.results(first.run_id)) == 2 * 2
        second = runner.score(sset, reqs, st)
        assert second.n_reused_items == 2 and second.n_scored_items == 4
        assert len(st.results(second.run_id)) == 6 * 2
        assert len(st.results(first.run_id)) == 2 * 2  # still what it had when it stopped
        assert st.run(first.run_id)["n_records"] == 4 and st.run(first.run_id)["status"] == "interrupted"


# --- the pipelined engine -------------------------------------------------------------------------
def _systems_x_refs(root, n_refs=4, systems=("a", "b", "c")):
    for k in range(n_refs):
        x = write_tone(root / "ref" / f"u{k}.wav", seconds=0.4 + 0.15 * k, freq=130 + 25 * k, seed=k)
        for j, s in enumerate(systems):
            y = x + 0.03 * np.random.default_rng(10 * k + j).standard_normal(x.size)
            (root / "gen" / s).mkdir(parents=True, exist_ok=True)
            sf.write(root / "gen" / s / f"u{k}.wav", y.astype(np.float32), 16000)
    return manifest.from_folder(root / "gen").with_references(root / "ref")


def test_units_group_items_by_reference_costliest_first(tmp_path, toy_metrics):
    sset = _systems_x_refs(tmp_path)
    reqs = runner.requests_from([("toy_snr", {}), ("toy_level", {})])
    with Store(tmp_path / "s.duckdb") as st:
        run = runner.start_run(sset, reqs, st, chunk_size=2)
        units = runner.units(run)
        assert sorted(len(u) for u in units) == [1, 1, 1, 1, 2, 2, 2, 2]  # 3 per ref, cut at 2
        for u in units:
            assert len({it.ref_sha256 for it in u.items}) == 1
        assert [u.cost for u in units] == sorted((u.cost for u in units), reverse=True)
        only_level = runner.units(run, {1})  # a metric without reference: units of one item
        assert len(only_level) == 12 and all(u.todo == ((1,),) for u in only_level)
        run.finish("finished")


@pytest.mark.slow
def test_pool_gpu_lane_and_serial_give_identical_records(tmp_path):
    """Real metrics (MCD and F0 on shared references, DNSMOS): in this process, in two
    worker processes, and with the GPU lane forced on the CPU (DNSMOS in a process of its own,
    the rest in the pool): the same records, bit for bit."""
    sset = _systems_x_refs(tmp_path, n_refs=3, systems=("a", "b"))
    reqs = runner.requests_from([(m, {}) for m in ("mcd", "f0", "dnsmos")])
    out = []
    for name, steps in (("serial", runner.Steps(1)), ("pool", runner.Steps(2)),
                        ("lane", runner.Steps(2, gpu_lane=True))):
        with Store(tmp_path / f"{name}.duckdb") as st:
            res = runner.score(sset, reqs, st, steps=steps, chunk_size=4)
            assert res.status == "finished"
            out.append([{k: v for k, v in r.items() if k != "run_id"} for r in st.results(res.run_id)])
    assert out[0] == out[1] == out[2] and len(out[0]) == 6 * 9


def test_progress_comes_per_unit_and_commits_come_in_batches(tmp_path, toy_metrics, monkeypatch):
    for k in range(7):
        write_tone(tmp_path / "g" / f"u{k}.wav", seconds=0.2, seed=k)
    sset = manifest.from_folder(tmp_path / "g")
    seen, commits = [], []
    write = Store.write

    def counting(self, run_id, records, *a, **kw):
        commits.append(len(records))
        return write(self, run_id, records, *a, **kw)

    monkeypatch.setattr(Store, "write", counting)
    monkeypatch.setattr(runner, "COMMIT_INTERVAL_S", 1e9)
    with Store(tmp_path / "s.duckdb") as st:
        runner.score(sset, _metrics(toy_metrics, "toy_level"), st, chunk_size=3,
                     progress=lambda p: seen.append((p.done_items, p.committed_items)))
    assert list(dict.fromkeys(d for d, _ in seen)) == list(range(8))  # the start, every item
    assert commits == [6, 6, 2]  # 3 items (2 records each) per commit, then the rest
    assert seen[-1] == (7, 7)


def test_real_metrics_apply_their_declared_maxima(tmp_path):
    """A 31 s pair: MCD and F0 (DTW, 30 s maximum) record too_long without decoding it,
    SI-SDR (600 s) scores it; the short pair beside it gets everything."""
    for name, seconds in (("long", 31.0), ("short", 1.0)):
        x = write_tone(tmp_path / "r" / f"{name}.wav", seconds=seconds, freq=150, seed=1)
        y = x + 0.05 * np.random.default_rng(2).standard_normal(x.size)
        (tmp_path / "g").mkdir(exist_ok=True)
        sf.write(tmp_path / "g" / f"{name}.wav", y.astype(np.float32), 16000)
    sset = manifest.from_folder(tmp_path / "g").with_references(tmp_path / "r")
    with Store(tmp_path / "s.duckdb") as st:
        rows = st.results(runner.score(sset, runner.requests_from(
            [("mcd", {}), ("f0", {}), ("si_sdr", {})]), st).run_id)
    by = {(r["item_id"], r["metric"]): r for r in rows}
    for out in ("mcd", "f0_rmse_cents", "f0_corr", "vuv_error", "f0_gpe"):
        assert by[("long", out)]["error_type"] == "too_long", out
        assert "30 s maximum" in by[("long", out)]["error"]
        assert by[("short", out)]["status"] == "ok" or out == "f0_corr"
    assert by[("long", "si_sdr")]["status"] == "ok" and by[("short", "si_sdr")]["status"] == "ok"
