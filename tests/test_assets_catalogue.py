"""The registered public checkpoints (asr.yaml, speaker.yaml), search in upstream caches,
the trust-on-first-use policy for unknown checksums, and ``speechqe models``."""

from __future__ import annotations

import hashlib
import json
import re
import warnings

import pytest
from typer.testing import CliRunner

from speechqe import assets
from speechqe.errors import ChecksumMismatchError, ConfigError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assets._hash_memo.clear()
    return tmp_path / "cache"


def test_openai_whisper_checkpoints_match_the_official_list():
    whisper = pytest.importorskip("whisper")
    cat = assets.catalogue()
    for size, url in whisper._MODELS.items():
        if size in ("large", "turbo"):  # aliases of large-v3 / large-v3-turbo
            continue
        a = cat[f"openai-whisper-{size}"]
        (f,) = a.files
        assert f.url == url and f.sha256 == url.split("/")[-2] and f.name == url.split("/")[-1]
        assert a.format == "openai-whisper" and a.licence.startswith("MIT") and a.paper


def test_ecapa_files_are_pinned_to_a_revision_with_checksums():
    a = assets.get("speechbrain-spkrec-ecapa-voxceleb")
    rev = a.param("revision")
    assert {f.name for f in a.files} >= {"hyperparams.yaml", "embedding_model.ckpt",
                                         "mean_var_norm_emb.ckpt"}
    for f in a.files:
        assert f.sha256 and len(f.sha256) == 64 and f.size
        assert f.url.endswith(f"/resolve/{rev}/{f.name}")  # never a moving branch


def test_official_whisper_cache_is_found_and_verified_in_place(cache, tmp_path):
    """A checkpoint already downloaded by openai-whisper (~/.cache/whisper) is used in place."""
    blob = b"not really a checkpoint"
    a = assets._parse_asset(
        {"name": "openai-whisper-fake", "source": "url", "format": "openai-whisper",
         "search_dirs": ["{xdg_cache}/whisper"],
         "files": {"fake.pt": {"sha256": hashlib.sha256(blob).hexdigest(),
                               "url": "http://127.0.0.1:9/never-called"}}},
        "test",
    )
    assert not a.is_present()
    (tmp_path / "xdg" / "whisper").mkdir(parents=True)
    (tmp_path / "xdg" / "whisper" / "fake.pt").write_bytes(blob)
    assert a.path() == tmp_path / "xdg" / "whisper"
    (tmp_path / "xdg" / "whisper" / "fake.pt").write_bytes(blob + b"!")
    assets._hash_memo.clear()
    with pytest.raises(ChecksumMismatchError):
        a.path()


def test_missing_url_asset_names_every_way_to_provide_it(cache):
    a = assets.get("openai-whisper-large-v3")
    msg = a.missing_message(None)
    assert a.files[0].url in msg and a.files[0].sha256 in msg
    assert "SPEECHQE_ASSET_OPENAI_WHISPER_LARGE_V3" in msg and "--asset openai-whisper-large-v3=" in msg
    assert "whisper" in msg and "SPEECHQE_CACHE" in msg


def test_unknown_checksum_is_pinned_on_first_use_and_changes_are_refused(cache, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"first")
    a = assets._parse_asset(
        {"name": "tofu-asset", "source": "local", "format": "test",
         "files": {"w.bin": {"sha256": None}}},
        "test",
    )
    monkeypatch.setenv(a.env_var, str(folder))
    assert not a.checksums_known
    with pytest.warns(UserWarning, match="pinned its hash"):
        a.path()
    pins = json.loads(assets.pins_path(a.name).read_text())
    assert pins["w.bin"]["sha256"] == hashlib.sha256(b"first").hexdigest()
    fp = a.fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use is silent and verified
        a.path()
    (folder / "w.bin").write_bytes(b"second")
    assets._hash_memo.clear()
    with pytest.raises(ChecksumMismatchError, match="pinned on first use"):
        a.path()
    assets.unpin(a.name)
    with pytest.warns(UserWarning):
        a.path()
    assert a.fingerprint() != fp


@pytest.mark.parametrize("record, message", [
    ({"name": "x", "source": "local", "files": {"a": {"sha256": "abc"}}},
     "t: asset 'x': files.0: a: sha256 must be 64 lower-case hex digits or null (unknown: pinned on first use); got 'abc'"),
    ({"name": "x", "source": "url", "files": {"a": {"sha256": "a" * 64}}},
     "t: asset 'x': a: a url asset needs a url for each file"),
    ({"name": "x", "source": "local", "bogus": 1, "files": {"a": None}},
     "t: asset 'x': unknown key 'bogus' (known: name, source, files, description, "),
    ({"name": "x", "source": "web", "files": {"a": None}},
     "t: asset 'x': source: Input should be 'package', 'url' or 'local' (got 'web')"),
    ({"name": "x", "source": "local", "files": {}}, "t: asset 'x': the asset lists no files"),
    ({"name": "x", "source": "local", "files": {"a": {"sha": "0" * 64}}},
     "t: asset 'x': files.0: unknown key 'sha' (known: name, sha256, url, size)"),
    ({"name": "x", "source": "local", "files": {"a": {"size": "big"}}},
     "t: asset 'x': files.0.size: Input should be a valid integer, unable to parse string as an integer (got 'big')"),
    ({"source": "local", "files": {"a": None}}, "t: name: Field required"),
])
def test_catalogue_rejects_malformed_entries(record, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        assets._parse_asset(record, "t")


def test_catalogue_records_round_trip_and_repeat_no_default(tmp_path):
    """Every shipped record validates, survives a round trip through its plain form, and sets
    no key to the model's own default (defaults live in the model only)."""
    import yaml

    for path in sorted(assets.catalogue_dir().glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")):
            a = assets._parse_asset(raw, str(path))
            assert assets.Asset.model_validate(a.model_dump()) == a
            for key, value in raw.items():
                field = assets.Asset.model_fields[key]
                assert field.is_required() or value != field.default, (path.name, a.name, key)
            for spec in (raw["files"] or {}).values():
                for key, value in (spec if isinstance(spec, dict) else {}).items():
                    assert value != assets.AssetFile.model_fields[key].default, (path.name, a.name, key)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: x\n  source: local\n  files: {a: {sha256: abc}}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: asset 'x': files.0: a: sha256 must be")):
        assets.load_catalogue([bad])
    bad.write_text("name: x\n")
    with pytest.raises(ConfigError, match="an asset catalogue is a YAML list"):
        assets.load_catalogue([bad])
    bad.write_text("- [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        assets.load_catalogue([bad])


def test_models_cli_lists_and_verifies():
    from speechqe.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["whisper-tiny.en-ct2"]["present"] and rows["whisper-tiny.en-ct2"]["licence"]
    assert rows["resemblyzer-ge2e"]["size"] == 17090379
    assert "openai-whisper-large-v3" in rows and "speechbrain-spkrec-ecapa-voxceleb" in rows
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "present" in res.stdout and "absent" in res.stdout
    res = runner.invoke(app, ["models", "verify", "whisper-tiny.en-ct2", "resemblyzer-ge2e"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("ok") >= 2


def test_models_verify_fails_on_a_corrupt_override(tmp_path, cache):
    from speechqe.cli.main import app

    (tmp_path / "pretrained.pt").write_bytes(b"corrupt")
    res = CliRunner().invoke(
        app, ["models", "--asset", f"resemblyzer-ge2e={tmp_path}", "verify", "resemblyzer-ge2e"]
    )
    assets.clear_overrides()
    assert res.exit_code == 1 and "FAILED" in res.stdout
    res = CliRunner().invoke(app, ["models", "verify", "openai-whisper-large-v3"])
    assert res.exit_code == 1 and "absent" in res.stdout
