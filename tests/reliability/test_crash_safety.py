"""Crash safety: ``kill -9`` at random points of scoring runs and MOS training runs, each
followed by a rerun (issue 12).

Scoring: a set of short items scored with the toy metrics (tests/plugins/toy_metrics.py, through
``SPEECHQE_PLUGINS``); each trial draws a chunk size, a number of worker processes, one or two
kill times (a uniform fraction of an undisturbed run's duration) and kills the whole process
group with SIGKILL, then reruns the same command to the end. After every kill the store holds
whole chunks only (every output of every item committed, nothing half-written, no duplicate);
after the rerun it holds exactly one record per (item, output), with the values and statuses of
an undisturbed run, and the final run's results equal the undisturbed run's.

MOS training: the same for ``speechqe mos train`` with a tiny configuration (a random-weight
SSL strong learner that checkpoints every step, log-mel weak learners, stacking): after the
rerun the bundle's files are byte-identical to an undisturbed run's (``bundle.json`` up to its
creation time and timings) and its work folder is gone.

The trials are drawn from a seeded generator (``SPEECHQE_CRASH_SEED``, default 12): a failure
names its trial, and the same seed replays the same plan. The many-trial tests are ``slow``
(24 scoring trials, 12 training trials); one kill -9 and one Ctrl-C of a scoring run run by
default.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import duckdb
import numpy as np
import pytest

from conftest import write_tone

from .helpers import run_job

SEED = int(os.environ.get("SPEECHQE_CRASH_SEED", "12"))
OUTPUTS_PER_ITEM = 3  # toy_peak_db, toy_rms_db (toy_level) and toy_snr
SCORE_WARM = ("torch", "duckdb", "speechqe.engine.evaluation", "speechqe.engine.runner")
MOS_WARM = ("torch", "torchaudio", "sklearn.linear_model", "sklearn.svm", "lightgbm",
            "speechqe.predictors.train", "speechqe.predictors.ssl_strong.train")


# ------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------
def score_set(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` items (three systems) with references of the same length; lengths vary so that
    the runner's length-sorted chunks mix systems."""
    for k in range(n):
        seconds = 0.05 + 0.01 * (k % 7)
        write_tone(root / "gen" / f"sys{k % 3}" / f"u{k:03d}.wav", seconds=seconds, seed=k,
                   freq=150 + 7 * k)
        write_tone(root / "ref" / f"u{k:03d}.wav", seconds=seconds, seed=k + 5000, freq=150 + 7 * k)
    return root / "gen", root / "ref"


def score_argv(gen: Path, ref: Path, db: Path, chunk: int, workers: int) -> list[str]:
    return ["score", str(gen), "--ref", str(ref), "--metrics", "toy_level,toy_snr",
            "--param", "toy_level.delay_s=0.01", "--chunk-size", str(chunk),
            "--workers", str(workers), "--db", str(db), "--progress", "none"]


def score_plan(n_trials: int, rng: random.Random) -> list[dict]:
    return [{"trial": k, "chunk": rng.choice([1, 2, 5, 8, 16, 40]),
             "workers": rng.choice([1, 1, 1, 1, 1, 2]),
             "fracs": [rng.uniform(0.02, 0.95) for _ in range(rng.choice([1, 1, 2]))]}
            for k in range(n_trials)]


def records(db: Path) -> dict[tuple[str, str], tuple[float | None, str]]:
    """``(input_key, metric) -> (value, status)`` of every record in a store."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT input_key, metric, value, status FROM scores").fetchall()
    finally:
        con.close()
    out = {}
    for key, metric, value, status in rows:
        assert (key, metric) not in out, f"duplicate record {(key, metric)} in {db}"
        out[(key, metric)] = (value, status)
    return out


def final_results(db: Path) -> list[tuple]:
    """The latest finished run's results: ``(item_id, metric, value, status)``, sorted."""
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        run = [r for r in st.runs() if r["status"] == "finished"][-1]
        return sorted((r["item_id"], r["metric"], r["value"], r["status"])
                      for r in st.results(run["run_id"]))


def run_score_trials(tmp: Path, n_items: int, plan: list[dict], extra: list[dict] = ()) -> dict:
    gen, ref = score_set(tmp / "set", n_items)
    steps = []
    for w in sorted({t["workers"] for t in plan} | {1}):
        steps.append({"id": f"full-w{w}", "argv": score_argv(gen, ref, tmp / f"full-w{w}.duckdb", 8, w),
                      "timeout": 300})
    for t in plan:
        db = tmp / f"trial{t['trial']}.duckdb"
        for j, frac in enumerate(t["fracs"]):
            steps.append({"id": f"t{t['trial']}-kill{j}", "timeout": 300, "kill_after_frac": frac,
                          "ref": f"full-w{t['workers']}",
                          "argv": score_argv(gen, ref, db, t["chunk"], t["workers"])})
            steps.append({"id": f"t{t['trial']}-count{j}", "action": "count", "db": str(db)})
        steps.append({"id": f"t{t['trial']}-rerun", "timeout": 300,
                      "argv": score_argv(gen, ref, db, t["chunk"], t["workers"])})
    return run_job(steps + list(extra), tmp / "job", warm=SCORE_WARM, timeout=1800)


def check_score_trials(tmp: Path, n_items: int, plan: list[dict], res: dict) -> dict:
    """Assert every trial's guarantees; return the figures docs/reliability.md reports."""
    n_records = n_items * OUTPUTS_PER_ITEM
    for w in sorted({t["workers"] for t in plan} | {1}):
        assert res[f"full-w{w}"]["code"] == 0, res[f"full-w{w}"]["stderr"]
    full = records(tmp / "full-w1.duckdb")
    assert len(full) == n_records and all(s == "ok" for _, s in full.values())
    full_results = final_results(tmp / "full-w1.duckdb")
    assert final_results(tmp / f"full-w{max(t['workers'] for t in plan)}.duckdb") == full_results
    stats = {"trials": len(plan), "kills_landed": 0, "kills_after_end": 0, "committed_at_kill": [],
             "lost": 0, "duplicated": 0}
    for t in plan:
        name = f"trial {t['trial']} {t} (seed {SEED})"
        for j in range(len(t["fracs"])):
            killed = res[f"t{t['trial']}-kill{j}"]
            if killed["killed"]:
                stats["kills_landed"] += 1
            else:  # the run ended before its kill time: it must have ended well
                assert killed["code"] == 0, f"{name}: {killed['stderr']}"
                stats["kills_after_end"] += 1
            n, distinct = res[f"t{t['trial']}-count{j}"]["value"]
            stats["committed_at_kill"].append(n)
            assert n == distinct, f"{name}: duplicated records after kill {j}"
            assert n % OUTPUTS_PER_ITEM == 0, f"{name}: a chunk half-committed ({n} records)"
        rerun = res[f"t{t['trial']}-rerun"]
        assert rerun["code"] == 0, f"{name}: rerun failed:\n{rerun['stderr']}"
        db = tmp / f"trial{t['trial']}.duckdb"
        got = records(db)
        stats["lost"] += len(set(full) - set(got))
        stats["duplicated"] += 0  # records() asserts that no (input_key, metric) repeats
        assert got == full, f"{name}: stored records differ from an undisturbed run"
        assert final_results(db) == full_results, f"{name}: the final run's results differ"
    return stats


def _write_stats(name: str, stats: dict) -> None:
    """Figures for docs/reliability.md, when SPEECHQE_RELIABILITY_STATS names a folder."""
    folder = os.environ.get("SPEECHQE_RELIABILITY_STATS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(stats, indent=1))


QUICK_PLAN = [{"trial": 0, "chunk": 4, "workers": 1, "fracs": [0.4]}]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One driver job for the quick tests: a kill -9 trial (60 items, chunks of 4, killed at
    40% of an undisturbed run) and a Ctrl-C at 50% of one, each followed by a rerun."""
    tmp = tmp_path_factory.mktemp("quick")
    gen, ref = score_set(tmp / "set", 60)
    db = tmp / "ctrl-c.duckdb"
    extra = [{"id": "ctrl-c", "argv": score_argv(gen, ref, db, 4, 1), "kill_after_frac": 0.5,
              "ref": "full-w1", "signal": "INT"},
             {"id": "ctrl-c-count", "action": "count", "db": str(db)},
             {"id": "ctrl-c-rerun", "argv": score_argv(gen, ref, db, 4, 1)}]
    return tmp, run_score_trials(tmp, 60, QUICK_PLAN, extra=extra)


def test_one_kill_during_scoring_then_rerun(quick):
    tmp, res = quick
    stats = check_score_trials(tmp, 60, QUICK_PLAN, res)
    assert stats["lost"] == 0 and stats["kills_landed"] + stats["kills_after_end"] == 1


def test_ctrl_c_during_scoring_exits_130_and_a_rerun_resumes(quick):
    """SIGINT in the middle of a run: exit 130, one line saying that a rerun resumes, no
    traceback; the run is recorded ``interrupted``; the rerun completes it exactly."""
    from speechqe.store import Store

    from .helpers import error_lines

    tmp, res = quick
    r = res["ctrl-c"]
    assert r["interrupted"] and r["code"] == 130, r
    (line,) = error_lines(r)
    assert line.startswith("error: interrupted") and "rerun the same command to resume" in \
        " ".join(r["stderr"].split()), r["stderr"]
    assert "Traceback" not in r["stdout"] + r["stderr"]
    db = tmp / "ctrl-c.duckdb"
    with Store(db, read_only=True) as st:
        assert [x["status"] for x in st.runs()] == ["interrupted", "finished"]
    n, distinct = res["ctrl-c-count"]["value"]
    assert n == distinct and n % OUTPUTS_PER_ITEM == 0
    assert res["ctrl-c-rerun"]["code"] == 0
    assert records(db) == records(tmp / "full-w1.duckdb")


@pytest.mark.slow
def test_kill_9_at_random_points_of_scoring_runs(tmp_path):
    """24 trials (>= 20 kills landing mid-run), 150 items each."""
    plan = score_plan(24, random.Random(SEED))
    res = run_score_trials(tmp_path, 150, plan)
    stats = check_score_trials(tmp_path, 150, plan, res)
    stats["seed"] = SEED
    stats["seconds"] = round(sum(r.get("seconds", 0) for r in res.values()), 1)
    _write_stats("score_kills", stats)
    assert stats["kills_landed"] >= 20, stats
    assert stats["lost"] == 0 and stats["duplicated"] == 0


# ------------------------------------------------------------------------------------------
# MOS training
# ------------------------------------------------------------------------------------------
def _voice(seed: int, seconds: float = 0.5, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(2, 4) * t))
    return (0.3 * x * env / np.max(np.abs(x))).astype(np.float32)


def mos_setup(root: Path) -> Path:
    """18 labelled items (6 clips x clean, white noise, low-pass) and a training config."""
    import csv

    import yaml

    from speechqe.encoders.ssl import TINY_ARCH
    from speechqe.predictors.synthetic import CONDITIONS, Clip, build_degraded_set

    conds = [c for c in CONDITIONS if c.name in ("clean", "white10", "lp1k")]
    clips = [Clip(f"c{i}", _voice(i), f"s {i}", f"spk{i % 2}") for i in range(6)]
    sset = build_degraded_set(clips, root / "wav", conditions=conds)
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["wav_path", "system_id", "sample_id", "avg_score", "clip"])
        for it in sset:
            w.writerow([it.path, it.system, it.id, it.mos, it.get("clip")])
    cfg = {
        "train": {"format": "sheet", "path": "train.csv"}, "folds": 3, "group_by": "clip",
        "device": "cpu", "cache": "cache",
        "strong": [{"name": "strong", "ssl": {"kind": "ssl", "arch": TINY_ARCH},
                    "model": {"domain_dim": 4, "listener_dim": 4, "blstm_hidden": 8,
                              "proj_hidden": 16, "phoneme": False, "layer": "weighted"},
                    "train": {"steps": 6, "batch_size": 4, "accumulate": 1, "lr": 1e-3,
                              "warmup_steps": 1, "max_seconds": 0.5, "checkpoint_every": 1}}],
        "weak": {"features": [{"name": "logmel", "encoder": {"kind": "logmel"}}],
                 "learners": [{"kind": "ridge"}, {"kind": "svr"}]},
        "stacking": {"stage2": [{"kind": "ridge"}]},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root / "cfg.yaml"


def _skops_digest(path: Path) -> str:
    """The content of a skops archive, independent of what skops makes up per process: its
    schema names objects and array files by Python object ids, which differ between two
    processes that save the same model."""
    import hashlib
    import re
    import zipfile

    with zipfile.ZipFile(path) as z:
        arrays = sorted(hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if n.endswith(".npy"))
        schema = re.sub(r"\d{6,}", "ID", z.read("schema.json").decode())
    return hashlib.sha256(("\n".join(arrays) + schema).encode()).hexdigest()


def bundle_digest(folder: Path) -> dict[str, object]:
    """Every file's content (sha256; skops archives by :func:`_skops_digest`), and bundle.json
    without its creation time, timings and the file checksums (those cover the skops bytes)."""
    import hashlib

    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "bundle.json":
            out[str(p.relative_to(folder))] = (
                _skops_digest(p) if p.suffix == ".skops" else hashlib.sha256(p.read_bytes()).hexdigest())
    meta = json.loads((folder / "bundle.json").read_text())
    meta.pop("created", None)
    meta.pop("files", None)
    report = meta.get("report", {})
    report.pop("seconds", None)
    for member in (report.get("members") or {}).values():
        if isinstance(member, dict):
            member.pop("seconds", None)
    out["bundle.json"] = meta
    return out


def run_mos_trials(tmp: Path, fracs: list[float | tuple[str, float]]) -> dict:
    """``fracs``: a kill time as a fraction of an undisturbed run's duration, or
    ``("save", delay)``: ``delay`` seconds after the bundle folder appears (while its files
    are being written)."""
    cfg = mos_setup(tmp)
    train = ["mos", "train", "-c", str(cfg), "-o"]
    steps = [{"id": "full", "argv": train + [str(tmp / "full")], "cwd": str(tmp), "timeout": 600}]
    for k, frac in enumerate(fracs):
        out = str(tmp / f"b{k}")
        when = ({"kill_when_exists": out, "kill_delay": frac[1]} if isinstance(frac, tuple)
                else {"kill_after_frac": frac, "ref": "full"})
        steps.append({"id": f"t{k}-kill", "argv": train + [out], "cwd": str(tmp), "timeout": 600,
                      **when})
        steps.append({"id": f"t{k}-files", "action": "files", "root": out})
        steps.append({"id": f"t{k}-rerun", "argv": train + [out], "cwd": str(tmp), "timeout": 600})
    return run_job(steps, tmp / "job", warm=MOS_WARM, timeout=3000)


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except ValueError:
        return False


def check_mos_trials(tmp: Path, fracs: list[float], res: dict) -> dict:
    assert res["full"]["code"] == 0, res["full"]["stderr"]
    want = bundle_digest(tmp / "full")
    stats = {"trials": len(fracs), "kills_landed": 0, "partial_bundles_at_kill": 0,
             "complete_at_kill": 0, "identical_after_rerun": 0}
    for k, frac in enumerate(fracs):
        name = f"MOS trial {k} (kill at {frac} of an undisturbed run, seed {SEED})"
        killed, rerun = res[f"t{k}-kill"], res[f"t{k}-rerun"]
        stats["kills_landed"] += bool(killed["killed"])
        files = res[f"t{k}-files"]["value"]
        complete = "bundle.json" in files
        if complete and not _is_json(tmp / f"b{k}" / "bundle.json"):
            # killed while bundle.json was being written: the hole that
            # test_a_kill_while_bundle_json_is_written_leaves_no_truncated_file tracks
            stats["truncated_bundle_json"] = stats.get("truncated_bundle_json", 0) + 1
            continue
        stats["complete_at_kill"] += complete
        stats["partial_bundles_at_kill"] += bool(files) and not complete
        if complete:  # killed after the bundle was written: the rerun refuses to overwrite it
            assert rerun["code"] == 2 and "already holds a bundle" in rerun["stderr"], rerun["stderr"]
        else:
            assert rerun["code"] == 0, f"{name}: rerun failed:\n{rerun['stderr']}"
        out = tmp / f"b{k}"
        assert bundle_digest(out) == want, f"{name}: the bundle differs from an undisturbed run's"
        assert not (tmp / f".b{k}.work").exists() or complete, f"{name}: work folder left"
        stats["identical_after_rerun"] += 1
    return stats


@pytest.mark.slow
def test_kill_9_at_random_points_of_mos_training(tmp_path):
    """12 trials: 8 kills anywhere in the run (a uniform fraction of an undisturbed run's
    duration), 4 while the bundle's files are being written (0-20 ms after its folder
    appears; a window a uniform kill time almost never hits)."""
    rng = random.Random(SEED + 1)
    fracs: list = [rng.uniform(0.02, 0.97) for _ in range(8)]
    fracs += [("save", rng.uniform(0.0, 0.02)) for _ in range(4)]
    res = run_mos_trials(tmp_path, fracs)
    stats = check_mos_trials(tmp_path, fracs, res)
    stats["seed"] = SEED
    stats["seconds"] = round(sum(r.get("seconds", 0) for r in res.values()), 1)
    _write_stats("mos_kills", stats)
    # A kill lands unless the run ends first; on a machine busier than during the undisturbed
    # run's timing, a late fraction or a save-window kill can miss (9 of 12 landed once, with a
    # benchmark running beside the tests). A run that was not killed is still checked above.
    assert stats["kills_landed"] >= 8, stats
    assert stats["partial_bundles_at_kill"] >= 1, stats
    assert stats["identical_after_rerun"] == len(fracs)


@pytest.mark.slow
def test_a_kill_while_bundle_json_is_written_leaves_no_truncated_file(tmp_path, monkeypatch):
    """The write of bundle.json stops half-way (what kill -9 after a partial write leaves):
    afterwards bundle.json is absent or complete."""
    from speechqe.predictors.bundle import MOSBundle
    from speechqe.predictors.train import load_config, train_bundle

    cfg_path = mos_setup(tmp_path)
    bundle = train_bundle(load_config(cfg_path), tmp_path / "full", base=tmp_path)
    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith("bundle.json"):
            real_write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise KeyboardInterrupt  # the process stops here
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(KeyboardInterrupt):
        MOSBundle.save(bundle, tmp_path / "again")
    monkeypatch.setattr(Path, "write_text", real_write_text)
    meta = tmp_path / "again" / "bundle.json"
    assert not meta.exists() or _is_json(meta)
