"""The reference-analysis cache: keyed by content and settings, atomic on disk, shared by the
systems of a run and by later runs, and never a source of different numbers."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone

from speechqe import manifest
from speechqe.analysis_cache import AnalysisCache, default_root
from speechqe.engine import runner
from speechqe.store import Store


def test_keys_follow_kind_content_and_settings(tmp_path):
    c = AnalysisCache(tmp_path)
    k = c.key("world", "h1", {"a": 1})
    assert k == c.key("world", "h1", {"a": 1})
    assert len({k, c.key("world", "h2", {"a": 1}), c.key("world", "h1", {"a": 2}),
                c.key("speaker", "h1", {"a": 1})}) == 4


def test_computed_once_then_read_from_memory_and_disk(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"f0": np.arange(5.0), "mcep": np.ones((5, 3), np.float32)}

    a = AnalysisCache(tmp_path)
    x = a.get_or_compute("world", "h", {"s": 1}, compute)
    y = a.get_or_compute("world", "h", {"s": 1}, compute)  # memory
    z = AnalysisCache(tmp_path).get_or_compute("world", "h", {"s": 1}, compute)  # disk
    assert len(calls) == 1 and (a.hits, a.misses) == (1, 1)
    for got in (y, z):
        assert np.array_equal(got["f0"], x["f0"]) and got["mcep"].dtype == np.float32
    files = list(tmp_path.rglob("*"))
    assert [p.suffix for p in files if p.is_file()] == [".npz"]  # no temporary file left


def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path):
    a = AnalysisCache(tmp_path)
    a.get_or_compute("world", "h", {}, lambda: {"v": np.zeros(3)})
    path = a.path("world", a.key("world", "h", {}))
    path.write_bytes(b"not a zip")
    fresh = AnalysisCache(tmp_path)
    got = fresh.get_or_compute("world", "h", {}, lambda: {"v": np.ones(3)})
    assert np.array_equal(got["v"], np.ones(3)) and fresh.misses == 1
    assert np.array_equal(np.load(path)["v"], np.ones(3))


def test_pickled_objects_are_never_loaded(tmp_path):
    """Entries are read with allow_pickle=False: an object array planted in the cache is a
    miss (recomputed), never unpickled."""
    a = AnalysisCache(tmp_path)
    key = a.key("world", "h", {})
    path = a.path("world", key)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        np.savez(f, v=np.array([object()], dtype=object))
    got = a.get_or_compute("world", "h", {}, lambda: {"v": np.ones(2)})
    assert np.array_equal(got["v"], np.ones(2)) and a.misses == 1


def test_an_unwritable_cache_costs_speed_not_results(tmp_path):
    (tmp_path / "ro").write_text("a file where the cache folder should be")
    a = AnalysisCache(tmp_path / "ro" / "sub")
    got = a.get_or_compute("world", "h", {}, lambda: {"v": np.ones(2)})
    assert np.array_equal(got["v"], np.ones(2))


def _writer(root, seed):
    c = AnalysisCache(root)
    for k in range(30):
        c.get_or_compute("world", f"h{k % 5}", {}, lambda: {"v": np.full(20000, k % 5, np.float64)})
    return True


def test_concurrent_writers_never_leave_a_torn_entry(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        assert all(pool.starmap(_writer, [(str(tmp_path), s) for s in range(3)]))
    for k in range(5):
        got = AnalysisCache(tmp_path).get_or_compute("world", f"h{k}", {}, lambda: pytest.fail("miss"))
        assert np.array_equal(got["v"], np.full(20000, k, np.float64))
    assert not [p for p in tmp_path.rglob("*.tmp")]


def _nightly(root, night, n_refs=3, systems=("a", "b")):
    """Systems x references: each output is its reference plus noise of this night's seed."""
    for k in range(n_refs):
        x = write_tone(root / "ref" / f"u{k}.wav", seconds=0.6, freq=140 + 20 * k, seed=k)
        for j, s in enumerate(systems):
            noise = 0.02 * np.random.default_rng(100 * night + 10 * k + j).standard_normal(x.size)
            (root / f"night{night}" / s).mkdir(parents=True, exist_ok=True)
            sf.write(root / f"night{night}" / s / f"u{k}.wav", (x + noise).astype(np.float32), 16000)
    return root / f"night{night}", root / "ref"


def test_references_are_analysed_once_across_systems_and_runs(tmp_path, monkeypatch):
    """Night 1 analyses each reference once for both systems; night 2 (new outputs, same
    references) analyses none; the values equal a run without any cache."""
    from speechqe.metrics.functional import world

    calls = []
    analyse = world.analyse

    def counting(x, sr, p=world.WorldParams()):
        calls.append(x.size)
        return analyse(x, sr, p)

    monkeypatch.setattr(world, "analyse", counting)
    reqs = runner.requests_from([("mcd", {}), ("f0", {})])
    n1, ref = _nightly(tmp_path, 1)
    n2, _ = _nightly(tmp_path, 2)
    with Store(tmp_path / "s.duckdb") as st:
        runner.score(manifest.from_folder(n1).with_references(ref), reqs, st)
        assert len(calls) == 3 + 6  # 3 references + 6 outputs
        calls.clear()
        r2 = runner.score(manifest.from_folder(n2).with_references(ref), reqs, st)
        assert len(calls) == 6  # the outputs only: every reference came from the cache
        cached = st.results(r2.run_id)
    assert (default_root(tmp_path / "s.duckdb") / "world").is_dir()
    with Store(tmp_path / "off" / "s.duckdb") as st:
        fresh = st.results(runner.score(manifest.from_folder(n2).with_references(ref), reqs, st,
                                        analysis_cache="off").run_id)
    assert not default_root(tmp_path / "off" / "s.duckdb").exists()
    strip = lambda rows: [(r["item_id"], r["metric"], r["value"], r["status"]) for r in rows]  # noqa: E731
    assert strip(cached) == strip(fresh) and len(fresh) == 6 * 5


def test_changed_settings_or_content_are_analysed_again(tmp_path, monkeypatch):
    from speechqe.metrics.functional import world

    calls = []
    analyse = world.analyse
    monkeypatch.setattr(world, "analyse", lambda x, sr, p=world.WorldParams(): (
        calls.append(1), analyse(x, sr, p))[1])
    n1, ref = _nightly(tmp_path, 1, n_refs=1, systems=("a",))
    with Store(tmp_path / "s.duckdb") as st:
        sset = manifest.from_folder(n1).with_references(ref)
        runner.score(sset, runner.requests_from([("mcd", {})]), st)
        assert len(calls) == 2
        runner.score(sset, runner.requests_from([("mcd", {"f0_method": "dio"})]), st)
        assert len(calls) == 4  # other settings: both analysed again
        write_tone(ref / "u0.wav", seconds=0.6, freq=150, seed=9)  # the reference changed
        runner.score(manifest.from_folder(n1).with_references(ref),
                     runner.requests_from([("mcd", {})]), st)
        assert len(calls) == 6
