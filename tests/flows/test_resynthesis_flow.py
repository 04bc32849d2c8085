"""The resynthesis-eval flow end to end on the session's Prefect API, with weight-free log-mel
codebooks and tiny random unit HiFi-GANs in the public checkpoint layout: outputs and records
land where the library puts them (the same records as ``resynthesis.score_outputs``), the comparison is
published, a rerun vocodes and scores nothing, a changed original is redone and only its
outputs are scored again, bad parameters fail before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_tone

from speechqe.store import Store

METRICS = ["toy_level", "toy_snr"]


def _task_names(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [t.name for t in runs]


def _artifact(key):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert arts, key
    return arts[0].data


@pytest.fixture
def pairs(tmp_path, monkeypatch):
    """Four tones with transcripts; two codebook/vocoder pairs (k=4, step 5; k=3, step 7)."""
    from speechqe.vocoders.features import load_feature_source
    from speechqe.vocoders.tokenize import train_codebook
    from speechqe.vocoders.unit_hifigan.checkpoint import save_checkpoint
    from speechqe.vocoders.unit_hifigan.config import GeneratorConfig
    from speechqe.vocoders.unit_hifigan.model import UnitHiFiGAN
    from speechqe.vocoders.units import KMeansConfig

    from speechqe.manifest import from_folder

    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "originals"
    for i, f in enumerate((150, 220, 330, 440)):
        write_tone(root / f"t{i}.wav", seconds=0.4, freq=f, seed=i)
    (tmp_path / "text.tsv").write_text("".join(f"t{i}\ttone {i}\n" for i in range(4)))
    src = load_feature_source("logmel", None, cache_dir=str(tmp_path / "cache"))
    codebooks, vocoders = [], []
    for k, step in ((4, 5), (3, 7)):
        cb = train_codebook(from_folder(root), src, KMeansConfig(k=k, batch_size=64, epochs=1))
        codebooks.append(str(cb.save(tmp_path / f"cb{k}.npz")))
        cfg = GeneratorConfig(num_embeddings=k, embedding_dim=8, upsample_rates=(5, 4, 4, 2),
                              upsample_kernel_sizes=(11, 8, 8, 4), upsample_initial_channel=16,
                              resblock="2", resblock_kernel_sizes=(3,),
                              resblock_dilation_sizes=((1, 3),))
        torch.manual_seed(step)
        save_checkpoint(tmp_path / f"voc{k}", step, UnitHiFiGAN(cfg), cfg,
                        {"units": {"codebook": cb.fingerprint()}, "step": step})
        vocoders.append(str(tmp_path / f"voc{k}"))
    return {"source": str(root), "codebooks": codebooks, "vocoders": vocoders,
            "transcripts": str(tmp_path / "text.tsv")}


def _rows(db, run_id):
    with Store(db, read_only=True) as st:
        rows = st.results(run_id)
    return sorted(({k: v for k, v in r.items() if k != "run_id"} for r in rows),
                  key=lambda r: (r["item_id"], r["metric"]))


def test_flow_resynthesizes_scores_compares_and_resumes(tmp_path, prefect_api, toy_metrics, pairs):
    from speechqe.flows.resynthesis import resynthesis_eval
    from speechqe.engine import resynthesis
    from speechqe.vocoders import resynth

    out = tmp_path / "out"
    kw = dict(**pairs, out=str(out), metrics=METRICS, chunk_size=3, report=False)
    state = resynthesis_eval(**kw, return_state=True)
    first = state.result()
    assert [p["status"] for p in first["pairs"]] == ["resynthesized", "resynthesized"]
    systems = [p["system"] for p in first["pairs"]]
    assert systems[0].endswith("-k4-hifigan5") and systems[1].endswith("-k3-hifigan7")
    assert first["store"] == str(out / resynth.STORE_NAME) and first["n_scored_items"] == 8
    names = _task_names(state.state_details.flow_run_id)
    assert sorted(n for n in names if n.startswith("resynthesize-")) == [
        "resynthesize-pair0", "resynthesize-pair1"]

    # Outputs where the library writes them; the comparison: bitrate beside quality.
    for k in range(2):
        sset, info = resynth.load_result(out / f"pair{k}")
        assert len(sset) == 4 and all(it.ok and it.text for it in sset)
        assert info["source_hash"] and info["vocoder_id"]
    table = {r["system"]: r for r in first["comparison"]}
    assert table[systems[0]]["nominal_bps"] == pytest.approx(200.0)  # 100 frames/s x 2 bits
    assert table[systems[1]]["nominal_bps"] == pytest.approx(100 * math.log2(3))
    assert all(math.isfinite(r["toy_snr"]) and math.isfinite(r["toy_peak_db"]) for r in table.values())
    assert json.loads((out / resynth.COMPARISON_NAME).read_text()) == first["comparison"]
    md = _artifact("speechqe-resynth-resynthesis")
    assert "nominal\\_bps" in md and "toy\\_snr" in md and systems[1].replace("_", "\\_") in md

    # The store holds exactly what the library's evaluation stores for these outputs.
    lib = resynthesis.score_outputs([out / "pair0", out / "pair1"], METRICS, tmp_path / "lib.duckdb")
    assert _rows(first["store"], first["run_id"]) == _rows(tmp_path / "lib.duckdb", lib["run_id"])
    assert resynthesis.comparison_table(lib) == first["comparison"]

    # A rerun vocodes nothing and scores nothing.
    wav = out / "pair0" / systems[0] / "t0.wav"
    mtime = wav.stat().st_mtime_ns
    state = resynthesis_eval(**kw, return_state=True)
    again = state.result()
    assert [p["status"] for p in again["pairs"]] == ["reused", "reused"]
    assert [p["system"] for p in again["pairs"]] == systems
    assert (again["n_scored_items"], again["n_reused_items"]) == (0, 8)
    assert not [n for n in _task_names(state.state_details.flow_run_id) if n.startswith("resynthesize-")]
    assert wav.stat().st_mtime_ns == mtime and again["comparison"] == first["comparison"]

    # A changed original: both pairs are redone, and only its two outputs are new content.
    write_tone(Path(pairs["source"]) / "t2.wav", seconds=0.4, freq=600, seed=9)
    third = resynthesis_eval(**kw)
    assert [p["status"] for p in third["pairs"]] == ["resynthesized", "resynthesized"]
    assert (third["n_scored_items"], third["n_reused_items"]) == (2, 6)


def test_bad_parameters_fail_before_any_work(tmp_path, prefect_api, toy_metrics, pairs):
    from speechqe.flows.resynthesis import resynthesis_eval

    out = tmp_path / "never"
    cb, voc = pairs["codebooks"], pairs["vocoders"]
    for bad, message in [
        ({"codebooks": cb[:1]}, "give one codebook per vocoder"),
        ({"vocoders": [voc[0], str(tmp_path / "nope")]}, "vocoder checkpoint not found"),
        ({"vocoders": voc[::-1]}, "pair 0 (cb4.npz, voc3): the vocoder has 3 unit embeddings"),
        ({"suite": "default"}, "not both"),
        ({"device": "tpu"}, "device must be one of"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ]:
        kw = {**pairs, "out": str(out), "metrics": METRICS, **bad}
        state = resynthesis_eval(**kw, return_state=True)
        assert state.is_failed() and message in state.message, (bad, state.message)
        assert not _task_names(state.state_details.flow_run_id), bad
    assert not out.exists()


def test_resynth_command_runs_the_flow(tmp_path, prefect_api, toy_metrics, pairs):
    from typer.testing import CliRunner

    from speechqe.cli.main import app

    out = tmp_path / "cli"
    args = ["resynth", pairs["source"], "-c", pairs["codebooks"][0], "-v", pairs["vocoders"][0],
            "-o", str(out), "--metrics", "toy_level", "--flow"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "resynthesized" in res.output and "toy_peak_db" in res.output
    assert (out / "comparison.json").is_file() and (out / "resynth.duckdb").is_file()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "reused" in res.output and "scored 0 items" in res.output
    res = CliRunner().invoke(app, args + ["--workers", "2"])
    assert res.exit_code == 2 and "--flow always scores" in res.output


def test_flow_fits_the_world_vocoder_and_reuses_the_fit(tmp_path, prefect_api, toy_metrics, pairs):
    """``vocoders=['world']`` with ``fit=``: fitted in the resynthesize task, saved beside the
    outputs; a rerun with the same fit set reuses the pair, another F0 mode redoes it."""
    from speechqe.flows.resynthesis import resynthesis_eval

    out = tmp_path / "wout"
    kw = dict(source=pairs["source"], codebooks=pairs["codebooks"][:1], vocoders=["world"],
              fit=pairs["source"], transcripts=pairs["transcripts"], out=str(out),
              metrics=METRICS, report=False)
    first = resynthesis_eval(**kw)
    (pair,) = first["pairs"]
    assert pair["status"] == "resynthesized" and pair["system"].endswith("-k4-world")
    assert (out / "pair0" / "world.safetensors").is_file() and first["n_scored_items"] == 4
    again = resynthesis_eval(**kw)
    assert again["pairs"][0]["status"] == "reused" and again["n_scored_items"] == 0
    units = resynthesis_eval(**{**kw, "f0": "units"})
    assert units["pairs"][0]["status"] == "resynthesized"
    assert units["pairs"][0]["system"].endswith("-world-f0units")
    with pytest.raises(Exception, match="--fit"):
        resynthesis_eval(**{**kw, "fit": None})
