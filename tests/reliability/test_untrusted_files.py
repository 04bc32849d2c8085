"""Untrusted files (issue 12): no pickle from a user path runs code without an explicit opt-in,
every checkpoint is read with ``weights_only=True`` or a tensor-only format, and a bundle or
codebook whose checksum or format version is wrong is refused with a message.

Every loader is given crafted malicious files: a pickle whose ``__reduce__`` would create a
marker file (``os.system('touch MARKER')``) in each format a loader reads (torch checkpoints,
``.npy``/``.npz`` with object arrays, a HyperPyYAML file with ``!apply:os.system``); the
marker must never appear, and the loader must answer with a ConfigError that names the file
and, where there is one, the opt-in. A static audit (``test_no_unguarded_deserialisation``)
fails on any new ``torch.load`` without ``weights_only=True``, ``np.load`` without
``allow_pickle=False``, ``pickle``/``joblib``/``dill``/``cloudpickle`` loads, ``yaml.load``
or ``torch.jit.load`` in the code base.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from speechqe.errors import ConfigError



class Evil:
    """Pickles to ``os.system('touch MARKER')``: unpickling it runs the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "MARKER-pickled-code-ran"
    yield m
    assert not m.exists(), "a malicious pickle ran code"


def _evil_torch(path: Path, marker: Path, payload: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(payload or {}), "x": Evil(marker)}, path)
    return path


def test_the_payload_is_real(tmp_path):
    """The crafted file does run code when unpickled the unsafe way (so that the tests below
    mean something)."""
    m = tmp_path / "ran"
    p = _evil_torch(tmp_path / "evil.pt", m)
    torch.load(p, weights_only=False)
    assert m.exists()


# ------------------------------------------------------------------------------------------
# speechqe core: encoders, ASR, speaker
# ------------------------------------------------------------------------------------------
def test_fairseq_checkpoint_refused_unless_trusted(tmp_path, marker):
    from speechqe.encoders.fairseq import read_checkpoint

    p = _evil_torch(tmp_path / "w2v.pt", marker, {"model": {}, "cfg": {"model": {}}})
    with pytest.raises(ConfigError, match="trust_pickle: true") as err:
        read_checkpoint(p)
    assert str(p) in str(err.value)


def test_torchaudio_state_dict_refused(tmp_path, marker):
    from speechqe.encoders.ssl import load_torchaudio_state_dict

    p = _evil_torch(tmp_path / "sd.pth", marker)
    with pytest.raises(ConfigError, match="run code when unpickled") as err:
        load_torchaudio_state_dict("wav2vec2_base", p)
    assert str(p) in str(err.value)


def test_corrupt_state_dict_is_a_config_error(tmp_path):
    from speechqe.encoders.ssl import load_torchaudio_state_dict

    (tmp_path / "sd.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="not a readable torch state dict"):
        load_torchaudio_state_dict("wav2vec2_base", tmp_path / "sd.pth")
    (tmp_path / "sd.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_torchaudio_state_dict("wav2vec2_base", tmp_path / "sd.safetensors")


def test_hugging_face_bin_weights_refused(tmp_path, marker):
    from speechqe.encoders.ssl import load_huggingface

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    _evil_torch(folder / "pytorch_model.bin", marker)
    with pytest.raises(ConfigError, match="pytorch_model.bin"):
        load_huggingface(folder)


def test_openai_whisper_checkpoint_refused(tmp_path, marker):
    from speechqe.encoders.whisper import load_openai_whisper

    p = _evil_torch(tmp_path / "whisper.pt", marker, {"dims": {}})
    with pytest.raises(ConfigError, match="Whisper checkpoint"):
        load_openai_whisper(p)


def test_openai_whisper_asr_backend_refuses_it_too(tmp_path, marker):
    from speechqe.asr.base import BackendConfig
    from speechqe.asr.whisper_openai import OpenAIWhisperBackend

    p = _evil_torch(tmp_path / "whisper.pt", marker, {"dims": {}})
    with pytest.raises(ConfigError, match="Whisper checkpoint"):
        OpenAIWhisperBackend(BackendConfig(backend="openai-whisper", model=str(p), device="cpu"))


def test_resemblyzer_weights_refused_unless_trusted(tmp_path, marker):
    from speechqe.speaker.encoders import EncoderConfig, ResemblyzerEncoder

    p = _evil_torch(tmp_path / "voice.pt", marker, {"model_state": {}})
    with pytest.raises(ConfigError, match="trust_code=true") as err:
        ResemblyzerEncoder(EncoderConfig(backend="resemblyzer", model=str(p)))
    assert str(p) in str(err.value)


EVIL_HPARAMS = """\
n_mels: 80
pretrained_path: speechbrain/not-a-real-repo
side_effect: !apply:os.system ["touch {marker}"]
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
"""


def test_speechbrain_hparams_that_call_python_refused_unless_trusted(tmp_path, marker):
    from speechqe.speaker.encoders import ECAPAEncoder, EncoderConfig, hparams_problems

    folder = tmp_path / "ecapa"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text(EVIL_HPARAMS.format(marker=marker))
    with pytest.raises(ConfigError, match=r"!apply:os.system.*trust_code=true"):
        ECAPAEncoder(EncoderConfig(backend="speechbrain-ecapa", model=str(folder)))
    # what the check allows and refuses
    assert hparams_problems("a: !new:speechbrain.lobes.features.Fbank\nb: !ref <a>\n"
                            "c: 'text with !apply:os.system in quotes'  # !module:os\n") == []
    assert hparams_problems("a: !new:subprocess.Popen\nb: !name:os.system\nc: !module:os\n"
                            "d: !include:other.yaml\n") == [
        "!new:subprocess.Popen", "!name:os.system", "!module:os", "!include:other.yaml"]


def test_speechbrain_checkpoint_refused_unless_trusted(tmp_path, marker):
    import sys

    sys.path.insert(0, str(REPO / "tests" / "speaker"))
    from ecapa_tiny import write_tiny_ecapa

    from speechqe.speaker.encoders import ECAPAEncoder, EncoderConfig

    folder = write_tiny_ecapa(tmp_path / "ecapa")
    _evil_torch(folder / "classifier.ckpt", marker)
    with pytest.raises(ConfigError, match=r"classifier.ckpt.*trust_code=true"):
        ECAPAEncoder(EncoderConfig(backend="speechbrain-ecapa", model=str(folder)))


def test_feature_cache_never_unpickles(tmp_path, marker):
    from speechqe.encoders.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    p = cache.path(key)
    p.parent.mkdir(parents=True)
    np.save(p, np.array([Evil(marker)], dtype=object), allow_pickle=True)
    assert cache.get(key) is None  # a foreign file is a miss, replaced by the next put


# ------------------------------------------------------------------------------------------
# Vocoders: codebooks and unit HiFi-GAN checkpoints
# ------------------------------------------------------------------------------------------
def _codebook(tmp_path):
    from speechqe.vocoders.units import Codebook

    cb = Codebook(centroids=np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32),
                  encoder="logmel", layer=0, frame_rate=100.0, sample_rate=16000, info={})
    return cb, cb.save(tmp_path / "cb.npz")


def test_codebook_with_pickled_objects_refused(tmp_path, marker):
    from speechqe.vocoders.units import Codebook

    cb, path = _codebook(tmp_path)
    header = json.dumps(cb.header())
    evil = tmp_path / "evil.npz"
    np.savez(evil, centroids=np.array([Evil(marker)], dtype=object), header=np.array(header))
    with pytest.raises(ConfigError, match="not a speechqe codebook"):
        Codebook.load(evil)


def test_codebook_with_a_wrong_checksum_or_format_version_refused(tmp_path):
    from speechqe.vocoders.units import Codebook

    cb, path = _codebook(tmp_path)
    assert Codebook.load(path).k == 4
    header = cb.header()
    altered = tmp_path / "altered.npz"
    np.savez(altered, centroids=cb.centroids + 1e-3, header=np.array(json.dumps(header)))
    with pytest.raises(ConfigError, match="fingerprint mismatch"):
        Codebook.load(altered)
    newer = tmp_path / "newer.npz"
    np.savez(newer, centroids=cb.centroids,
             header=np.array(json.dumps({**header, "format": "speechqe-kmeans-codebook/2"})))
    with pytest.raises(ConfigError, match="unknown codebook format"):
        Codebook.load(newer)


def test_unit_hifigan_checkpoint_with_pickled_objects_refused(tmp_path, marker):
    from speechqe.vocoders.unit_hifigan.checkpoint import load_generator
    from speechqe.vocoders.unit_hifigan.config import GeneratorConfig

    folder = tmp_path / "voc"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(GeneratorConfig().to_public()))
    _evil_torch(folder / "g_00000001", marker, {"generator": {}})
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        load_generator(folder / "g_00000001")


# ------------------------------------------------------------------------------------------
# MOS bundles
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weak_bundle(tmp_path_factory):
    """A trained bundle with log-mel ridge learners and the stacking ensemble (2 s)."""
    import yaml

    from speechqe.predictors.train import load_config, train_bundle

    from .test_crash_safety import mos_setup

    root = tmp_path_factory.mktemp("bundle")
    cfg = mos_setup(root)
    d = yaml.safe_load(cfg.read_text())
    d.pop("strong")
    d["weak"]["learners"] = [{"kind": "ridge"}]
    cfg.write_text(yaml.safe_dump(d))
    train_bundle(load_config(cfg), root / "b", base=root)
    return root / "b"


def _copy(bundle: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(bundle, dest)
    return dest


def _rechecksum(bundle: Path, rel: str) -> None:
    """Record ``rel``'s new sha256 in bundle.json, as someone who controls the folder could."""
    from speechqe.hashing import sha256_file

    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"][rel] = sha256_file(bundle / rel)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def test_bundle_learner_with_untrusted_types_never_runs_code(weak_bundle, tmp_path, marker):
    """A learner file replaced by a skops file holding an object whose loading would run code,
    with its checksum updated to match (checksums catch corruption, not an attacker who can
    write bundle.json): the skops trusted-type list refuses it, naming the file."""
    import skops.io as sio

    from speechqe.predictors.bundle import MOSBundle

    b = _copy(weak_bundle, tmp_path / "b")
    rel = "weak/logmel/logmel-ridge.skops"
    sio.dump({"coef": Evil(marker)}, b / rel)
    _rechecksum(b, rel)
    with pytest.raises(ConfigError, match="logmel-ridge.skops"):
        MOSBundle.load(b)


def test_bundle_file_with_a_wrong_checksum_refused(weak_bundle, tmp_path):
    """A learner file changed after training (same format, other numbers) is refused by the
    checksums bundle.json records; an extra or a missing file too."""
    from speechqe.predictors.bundle import MOSBundle

    b = _copy(weak_bundle, tmp_path / "b")
    rel = "weak/logmel/logmel-ridge.json"
    meta = json.loads((b / rel).read_text())
    (b / rel).write_text(json.dumps({**meta, "tampered": True}))
    with pytest.raises(ConfigError, match="logmel-ridge.json has changed"):
        MOSBundle.load(b)
    c = _copy(weak_bundle, tmp_path / "c")
    (c / "weak" / "logmel" / "extra.npz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="extra.npz"):
        MOSBundle.load(c)
    d = _copy(weak_bundle, tmp_path / "d")
    (d / rel).unlink()
    with pytest.raises(ConfigError, match="logmel-ridge.json"):
        MOSBundle.load(d)


def test_bundle_with_a_newer_or_foreign_format_refused(weak_bundle, tmp_path):
    from speechqe.predictors.bundle import MOSBundle

    for name, change, words in [("newer", {"version": 99}, "version 99"),
                                ("foreign", {"format": "something-else"}, "not a speechqe-mos-bundle")]:
        b = _copy(weak_bundle, tmp_path / name)
        meta = json.loads((b / "bundle.json").read_text())
        (b / "bundle.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ConfigError, match=words):
            MOSBundle.load(b)


# ------------------------------------------------------------------------------------------
# The static audit
# ------------------------------------------------------------------------------------------
SOURCES = ("speechqe", "metrics", "predictors", "vocoders", "flows", "data", "bench")
#: calls that may unpickle, with the one allowed use each: (file, function) pairs.
ALLOWED = {
    ("speechqe/encoders/fairseq.py", "read_checkpoint"),  # weights_only=False only if trust_pickle
}


def _calls(tree):
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = parents.get(node)
            while fn is not None and not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fn = parents.get(fn)
            yield node, fn.name if fn is not None else "<module>"


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call, name):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_no_unguarded_deserialisation():
    """Every torch.load has weights_only=True, every np.load allow_pickle=False; no pickle,
    joblib, dill, cloudpickle, marshal, yaml.load/unsafe_load or torch.jit.load anywhere."""
    banned = {"pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "dill.load",
              "dill.loads", "cloudpickle.load", "cloudpickle.loads", "marshal.load",
              "marshal.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
              "torch.jit.load", "pandas.read_pickle", "pd.read_pickle", "shelve.open"}
    found = []
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            if path.is_symlink() or any(p.is_symlink() for p in path.parents if REPO in p.parents):
                continue
            rel = str(path.relative_to(REPO))
            for call, fn in _calls(ast.parse(path.read_text(encoding="utf-8"))):
                name = _dotted(call.func)
                where = f"{rel}:{call.lineno} ({fn})"
                if name in banned:
                    found.append(f"{where}: {name}")
                elif name == "torch.load":
                    wo = _kw(call, "weights_only")
                    safe = isinstance(wo, ast.Constant) and wo.value is True
                    if not safe and (rel, fn) not in ALLOWED:
                        found.append(f"{where}: torch.load without weights_only=True")
                elif name in ("np.load", "numpy.load"):
                    ap = _kw(call, "allow_pickle")
                    if not (isinstance(ap, ast.Constant) and ap.value is False):
                        found.append(f"{where}: np.load without allow_pickle=False")
    assert not found, "\n".join(found)
