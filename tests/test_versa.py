"""--versa-config: a VERSA score config mapped to speechqe metrics (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import corpus
from typer.testing import CliRunner

from speechqe import plugins
from speechqe.cli.main import app
from speechqe.errors import ConfigError
from speechqe.versa import known_names, read_versa_config

# VERSA's egs/speech.yaml (abridged to the entries and keys that matter here), plus one entry
# that VERSA does not know.
SPEECH_YAML = """
- name: mcd_f0
  f0min: 40
  f0max: 800
  mcep_shift: 5
  mcep_fftl: 1024
  mcep_dim: 39
  mcep_alpha: 0.466
  seq_mismatch_tolerance: 0.1
  power_threshold: -20
  dtw: true
- name: signal_metric
- name: pesq
- name: stoi
- name: pseudo_mos
  predictor_types: ["utmos", "dnsmos", "plcmos", "dnsmos_pro_bvcc"]
  predictor_args:
    dnsmos:
      fs: 16000
- name: speaker
  model_tag: default
- name: squim_no_ref
- name: whisper_wer
  model_tag: default
  beam_size: 5
  text_cleaner: whisper_basic
- name: bogus_metric
"""


def test_mapping_names_parameters_and_reasons(tmp_path):
    cfg = tmp_path / "speech.yaml"
    cfg.write_text(SPEECH_YAML)
    m = read_versa_config(cfg)
    entries = {e.ref: dict(e.params) for e in m.entries}
    assert list(entries) == ["mcd", "f0", "si_sdr", "pesq", "stoi", "utmos_strong", "dnsmos",
                             "plcmos", "speaker_sim", "wer", "cer"]
    world = {"f0_floor": 40.0, "f0_ceil": 800.0, "frame_period_ms": 5.0, "mcep_order": 39,
             "align": "dtw"}
    assert entries["mcd"] == world and entries["f0"] == world
    assert entries["si_sdr"] == {"zero_mean": False}
    assert entries["wer"] == {"backend": "openai-whisper", "model": "", "beam_size": 5,
                              "normalizer": "basic"}
    unmapped = dict(m.unmapped)
    assert set(unmapped) == {"signal_metric.sdr", "signal_metric.sir", "signal_metric.sar",
                             "signal_metric.ci_sdr", "pseudo_mos.dnsmos_pro_bvcc",
                             "squim_no_ref", "bogus_metric"}
    assert "typo" in unmapped["bogus_metric"]
    notes = " ".join(m.notes)
    for ignored in ("mcep_alpha", "mcep_fftl", "seq_mismatch_tolerance", "power_threshold"):
        assert f"mcd_f0.{ignored} is not used" in notes
    assert "excludes c0" in notes
    # every mapped entry is a real metric whose parameters it accepts
    for e in m.entries:
        plugins.create(e.ref, dict(e.params))


def test_aliases_defaults_and_bad_files(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- name: ESTOI\n- name: mcd\n- name: snr_related\n")
    m = read_versa_config(cfg)
    assert [e.ref for e in m.entries] == ["estoi", "mcd", "f0", "si_sdr"]
    assert dict(m.entries[1].params)["align"] == "none"  # VERSA's default is dtw: false
    cfg.write_text("name: pesq\n")
    with pytest.raises(ConfigError, match="list of '- name: <metric>' entries"):
        read_versa_config(cfg)
    cfg.write_text("- name: nisqa\n- name: visqol\n")
    with pytest.raises(ConfigError, match="no entry maps to a speechqe metric: nisqa: NISQA"):
        read_versa_config(cfg)
    assert {"pesq", "mcd_f0", "pseudo_mos", "whisper_wer", "speaker"} <= set(known_names())


@pytest.mark.corpora
@pytest.mark.slow  # ~30 s on 2 cores: PESQ, STOI, WORLD MCD/F0, SI-SDR and DNSMOS on real speech
def test_versa_config_scores_a_set_with_the_matching_metrics(tmp_path):
    """pesq, stoi, an MCD/F0 entry, a signal-metric entry and DNSMOS score real speech; the
    unknown entry is listed before anything is scored."""
    clips = sorted(corpus("librivox-5").glob("*.wav"))[:2]
    rng = np.random.default_rng(0)
    for w in clips:
        x, sr = sf.read(w, dtype="float32")
        x = x[: 2 * sr]
        (tmp_path / "ref").mkdir(exist_ok=True)
        (tmp_path / "gen" / "sysA").mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "ref" / w.name, x, sr)
        noisy = x + 0.02 * rng.standard_normal(x.size).astype(np.float32)
        sf.write(tmp_path / "gen" / "sysA" / w.name, noisy, sr)
    cfg = tmp_path / "score.yaml"
    cfg.write_text("- name: pesq\n- name: stoi\n- name: mcd_f0\n  dtw: true\n"
                   "- name: signal_metric\n- name: pseudo_mos\n  predictor_types: [dnsmos]\n"
                   "- name: bogus_metric\n")
    db = tmp_path / "s.duckdb"
    out = tmp_path / "w.jsonl"
    res = CliRunner().invoke(app, ["score", str(tmp_path / "gen"), "--ref", str(tmp_path / "ref"),
                                   "--versa-config", str(cfg), "--db", str(db), "--out", str(out),
                                   "--layout", "wide", "--progress", "none"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "not scored: bogus_metric" in text
    assert text.index("not scored: bogus_metric") < text.index("gen: 2 items") < text.index("run ")
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    want = {"pesq", "stoi", "mcd", "f0_rmse_cents", "f0_corr", "vuv_error", "f0_gpe", "si_sdr",
            "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
    for r in rows:
        assert want <= set(r) and r["errors"] == {}, r
        assert 1.0 < r["pesq"] < 4.65 and 0.5 < r["stoi"] <= 1.0 and r["si_sdr"] > 3
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        run = st.run("latest")
    assert run["suite"] == "versa:score.yaml" and '"versa_config"' in run["params"]
