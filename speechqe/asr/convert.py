"""CTranslate2 Whisper models -> openai-whisper checkpoints.

CTranslate2 stores a converted model in ``model.bin`` (binary version 6, written by
``ctranslate2.specs.ModelSpec._serialize``), little-endian:

    uint32 binary_version | string spec_name | uint32 spec_revision | uint32 n_variables
    n_variables x ( string name | uint8 ndim | ndim x uint32 dim | uint8 dtype_id |
                    uint32 nbytes | nbytes of data )
    uint32 n_aliases | n_aliases x ( string alias | string variable_name )

where ``string`` is ``uint16 length (including a NUL) | bytes | NUL`` and ``dtype_id`` indexes
(float32, int8, int16, int32, float16, bfloat16). Quantised weights ``X`` come with ``X_scale``
(int8: one scale per output row, ``X = q / scale``; int16: one scalar scale).

A ``WhisperSpec`` (revision 3) holds the same tensors as openai-whisper's ``Whisper`` module, in
another layout: self-attention query/key/value are fused into one ``(3 * d, d)`` projection
(the key has no bias in Whisper, so its slice of the fused bias is zero), cross-attention
key/value into one ``(2 * d, d)``, and the output projection is tied to the token embedding
(stored as an alias). :func:`ct2_to_openai_state_dict` undoes that and checks every assumption
it relies on (spec name and revision, GELU, pre-norm, unscaled embeddings, zero key bias, tied
output projection); anything else is refused rather than converted approximately.

The result, saved by :func:`convert_ct2_whisper` as ``{'dims': ..., 'model_state_dict': ...}``,
loads with ``whisper.load_model(path)`` and transcribes like the CTranslate2 model (tested on
real speech with the packaged tiny.en in ``tests/asr/test_convert.py``).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from speechqe.errors import ConfigError

_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
SUPPORTED_BINARY_VERSIONS = (5, 6)


@dataclass
class CT2Model:
    """The decoded content of a ``model.bin``.

    Attributes:
        spec: spec class name (``WhisperSpec``); revision: spec revision.
        variables: name -> array (scalars as 0-d arrays; bfloat16 widened to float32).
        aliases: alias name -> variable name.
    """

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable by name (following aliases), dequantised to float32 when it is quantised."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise KeyError(name)
        value = self.variables[name]
        scale = self.variables.get(name + "_scale")
        if scale is not None:
            value = value.astype(np.float32)
            if scale.ndim == 0:
                value = value / np.float32(scale)
            else:
                value = value / scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1))
        return value

    def scalar(self, name: str) -> int:
        return int(self.variables[name].reshape(()))

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (see the module docstring for the layout).

    Raises:
        ConfigError: not a CTranslate2 model file, an unsupported binary version, or truncated.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ConfigError(f"not a CTranslate2 model (no such file): {path}")
    data = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ConfigError(f"{path}: truncated CTranslate2 model (at byte {pos})")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return value

    def string() -> str:
        nonlocal pos
        n = take("<H")
        raw = bytes(data[pos : pos + n])
        pos += n
        if len(raw) != n or not raw.endswith(b"\0"):
            raise ConfigError(f"{path}: corrupt string in CTranslate2 model (at byte {pos})")
        return raw[:-1].decode("utf-8")

    version = take("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ConfigError(
            f"{path}: CTranslate2 binary version {version} is not supported "
            f"(supported: {SUPPORTED_BINARY_VERSIONS})"
        )
    spec = string()
    revision = take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        dtype = _DTYPES[take("<B")]
        nbytes = take("<I")
        if pos + nbytes > len(data):
            raise ConfigError(f"{path}: truncated CTranslate2 model (variable {name})")
        raw = data[pos : pos + nbytes]
        pos += nbytes
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).copy()
        variables[name] = arr.reshape(shape)
    aliases = {}
    for _ in range(take("<I")):
        alias = string()
        aliases[alias] = string()
    if pos != len(data):
        raise ConfigError(f"{path}: {len(data) - pos} unexpected trailing bytes")
    return CT2Model(spec, revision, version, variables, aliases)


def _layers(m: CT2Model, prefix: str) -> int:
    pat = re.compile(rf"^{prefix}/layer_(\d+)/")
    idx = {int(mm.group(1)) for k in m.variables if (mm := pat.match(k))}
    if idx != set(range(len(idx))) or not idx:
        raise ConfigError(f"CTranslate2 model: {prefix} layers are not numbered 0..n-1")
    return len(idx)


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ConfigError(f"cannot convert this CTranslate2 model to openai-whisper: {what}")


def ct2_to_openai_state_dict(m: CT2Model) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Map a CTranslate2 ``WhisperSpec`` to openai-whisper's ``(dims, state_dict)``.

    The arrays keep the stored precision (float16 or float32; quantised weights are dequantised
    to float32). Raises :class:`ConfigError` for any layout it cannot map exactly.
    """
    _require(m.spec == "WhisperSpec", f"spec is {m.spec}, not WhisperSpec")
    _require(m.revision == 3, f"WhisperSpec revision {m.revision} (only 3 is known)")
    _require(m.scalar("decoder/activation") == 3, "decoder activation is not GELU")
    _require(m.scalar("decoder/pre_norm") == 1, "decoder is not pre-norm")
    _require(m.scalar("decoder/scale_embeddings") == 0, "decoder scales embeddings")
    for flag in ("decoder/alibi", "decoder/start_from_zero_embedding"):
        if m.has(flag):
            _require(m.scalar(flag) == 0, f"{flag} is set")
    emb = m.get("decoder/embeddings/weight")
    if m.has("decoder/projection/weight"):
        proj = m.get("decoder/projection/weight")
        _require(
            m.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
            or np.array_equal(proj, emb),
            "the output projection is not tied to the token embedding",
        )
    _require(not m.has("decoder/projection/bias"), "the output projection has a bias")

    sd: dict[str, np.ndarray] = {}
    conv1 = m.get("encoder/conv1/weight")
    n_state = conv1.shape[0]
    n_enc = _layers(m, "encoder")
    n_dec = _layers(m, "decoder")

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[dst + ".weight"] = m.get(src + "/weight")
        if bias:
            sd[dst + ".bias"] = m.get(src + "/bias")

    def norm(dst: str, src: str) -> None:
        sd[dst + ".weight"] = m.get(src + "/gamma")
        sd[dst + ".bias"] = m.get(src + "/beta")

    def split_attention(dst: str, src: str, parts: tuple[str, ...]) -> None:
        w = m.get(src + "/weight")
        b = m.get(src + "/bias")
        _require(w.shape[0] == len(parts) * n_state, f"{src} has {w.shape[0]} rows")
        for k, part in enumerate(parts):
            rows = slice(k * n_state, (k + 1) * n_state)
            sd[f"{dst}.{part}.weight"] = w[rows]
            if part == "key":
                _require(not np.any(b[rows]), f"{src}: the key projection has a non-zero bias")
            else:
                sd[f"{dst}.{part}.bias"] = b[rows]

    def mlp(dst: str, src: str) -> None:
        linear(dst + ".mlp.0", src + "/ffn/linear_0")
        linear(dst + ".mlp.2", src + "/ffn/linear_1")
        norm(dst + ".mlp_ln", src + "/ffn/layer_norm")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = m.get("encoder/position_encodings/encodings")
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        split_attention(dst + ".attn", src + "/self_attention/linear_0", ("query", "key", "value"))
        linear(dst + ".attn.out", src + "/self_attention/linear_1")
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        mlp(dst, src)
    norm("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = emb
    sd["decoder.positional_embedding"] = m.get("decoder/position_encodings/encodings")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        split_attention(dst + ".attn", src + "/self_attention/linear_0", ("query", "key", "value"))
        linear(dst + ".attn.out", src + "/self_attention/linear_1")
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        linear(dst + ".cross_attn.query", src + "/attention/linear_0")
        split_attention(dst + ".cross_attn", src + "/attention/linear_1", ("key", "value"))
        linear(dst + ".cross_attn.out", src + "/attention/linear_2")
        norm(dst + ".cross_attn_ln", src + "/attention/layer_norm")
        mlp(dst, src)
    norm("decoder.ln", "decoder/layer_norm")

    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(sd["encoder.positional_embedding"].shape[0]),
        "n_audio_state": int(n_state),
        "n_audio_head": m.scalar("encoder/num_heads"),
        "n_audio_layer": n_enc,
        "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(sd["decoder.positional_embedding"].shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": m.scalar("decoder/num_heads"),
        "n_text_layer": n_dec,
    }
    return dims, sd


def convert_ct2_whisper(model_dir: str | Path, out_path: str | Path) -> Path:
    """Convert a CTranslate2 Whisper model folder into an openai-whisper ``.pt`` checkpoint.

    The checkpoint holds ``{'dims': dict, 'model_state_dict': dict of tensors}`` (the official
    format read by ``whisper.load_model``); tensors keep the CTranslate2 precision. Written to a
    temporary file and renamed, so a crash never leaves a half-written checkpoint.

    Returns:
        ``out_path``.
    """
    import torch

    dims, sd = ct2_to_openai_state_dict(read_ct2_model(model_dir))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save({"dims": dims, "model_state_dict": state}, tmp)
    tmp.replace(out_path)
    return out_path

