"""Asset records: packaged assets verify, overrides, checksum mismatch, missing messages."""

from __future__ import annotations

import shutil

import pytest

from speechqe import assets
from speechqe.errors import AssetError, ChecksumMismatchError


def test_catalogue_parses_and_packaged_defaults_verify():
    cat = assets.catalogue()
    assert "dnsmos-p835" in cat and "distillmos-v7" in cat
    for name in ("dnsmos-p835", "distillmos-v7"):
        a = cat[name]
        root = a.path()  # verifies sha256
        assert all((root / f.name).is_file() for f in a.files)


def test_override_with_corrupt_copy_is_refused(tmp_path, monkeypatch):
    a = assets.get("dnsmos-p835")
    for f in a.files:
        shutil.copy(a.path() / f.name, tmp_path / f.name)
    monkeypatch.setenv(a.env_var, str(tmp_path))
    assert a.path() == tmp_path
    with open(tmp_path / a.files[0].name, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    assets._hash_memo.clear()
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        a.path()


def test_missing_local_asset_says_how_to_provide_it(tmp_path, monkeypatch):
    a = assets.get("distillmos-v7")
    monkeypatch.setenv(a.env_var, str(tmp_path / "nowhere"))
    with pytest.raises(AssetError) as err:
        a.path()
    msg = str(err.value)
    assert a.env_var in msg and "--asset distillmos-v7=" in msg and "pip install" in msg


def test_resolved_assets_are_recorded_inside_the_block_only(tmp_path, monkeypatch):
    a = assets.get("dnsmos-p835")
    a.path()  # outside any block: not recorded anywhere
    with assets.recording_resolved() as used:
        a.path()
    assert used == {"dnsmos-p835": {"fingerprint": a.fingerprint(), "source": "package",
                                    "verified": True}}
    for f in a.files:
        shutil.copy(a.path() / f.name, tmp_path / f.name)
    monkeypatch.setenv(a.env_var, str(tmp_path))
    with assets.recording_resolved() as used2:
        a.path()
    assert used2["dnsmos-p835"]["source"] == "override"
    assert used2["dnsmos-p835"]["fingerprint"] == a.fingerprint()
    assert used["dnsmos-p835"]["source"] == "package"  # closed blocks record nothing more
