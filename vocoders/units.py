"""The k-means unit tokenizer: codebooks, mini-batch training, encoding, run-length
deduplication, bitrate.

Speech features (``(frames, dim)`` from an encoder layer, see :mod:`speechqe.vocoders.features`)
are quantised to the nearest of K centroids, as in GSLM (Lakhotia et al., TACL 2021) and
HuBERT units. Training is mini-batch k-means (Sculley, WWW 2010) over a *stream* of feature
chunks, re-read every epoch, so the data never has to fit in memory:

* backend ``'sklearn'``: ``sklearn.cluster.MiniBatchKMeans.partial_fit``, the library made for
  the job, kept as the reference;
* backend ``'torch'``: the same update rule (per-centre running means with counts, reassignment
  of empty centres) in torch, so it also runs on a GPU. ``bench/kmeans_backends.py`` runs both
  side by side: on one CPU thread (100k x 384 frames, 3 epochs) torch took 1.8 s vs 6.1 s at
  K=100 and 7.3 s vs 7.3 s at K=500, reaching the same inertia (ratio 1.000), so ``'auto'``
  picks torch on CPU and GPU alike.

Both start from the same k-means++ seeding (``sklearn.cluster.kmeans_plusplus``) of
``init_size`` frames drawn uniformly from the stream.

A :class:`Codebook` is saved as one ``.npz`` (``numpy.savez``; read back with
``allow_pickle=False``) holding the centroids and a JSON header naming the encoder, layer,
frame rate and input sample rate it was trained for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from speechqe.errors import ConfigError

CODEBOOK_FORMAT = "speechqe-kmeans-codebook/1"
UNITS_FORMAT = "speechqe-units/1"

FeatureStream = Callable[[], Iterable[np.ndarray]]


# ------------------------------------------------------------------------------------------
# Codebook
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Codebook:
    """K centroids for one encoder layer.

    Attributes:
        centroids: ``(K, dim)`` float32.
        encoder: the feature extractor's id (e.g. ``whisper-tiny.en-ct2``, ``logmel-80``).
        layer: the encoder layer the features come from (``None``: the extractor's output).
        frame_rate: feature frames per second (Hz).
        sample_rate: the rate the encoder takes its audio at (Hz).
        info: training facts (frames, files, backend, inertia, seconds, ...), JSON-able.
    """

    centroids: np.ndarray
    encoder: str
    layer: int | None
    frame_rate: float
    sample_rate: int
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = np.ascontiguousarray(self.centroids, dtype=np.float32)
        if c.ndim != 2 or c.shape[0] < 2:
            raise ConfigError(f"centroids must be (K >= 2, dim), got {c.shape}")
        if not np.isfinite(c).all():
            raise ConfigError("centroids hold NaN or infinite values")
        object.__setattr__(self, "centroids", c)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def nominal_bitrate(self) -> float:
        """``frame_rate * log2(K)`` bits per second."""
        return self.frame_rate * math.log2(self.k)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex) of the centroids and the encoder identity."""
        h = hashlib.sha256(self.centroids.tobytes())
        h.update(json.dumps([self.encoder, self.layer, self.frame_rate, self.sample_rate]).encode())
        return h.hexdigest()[:16]

    def header(self) -> dict[str, Any]:
        return {
            "format": CODEBOOK_FORMAT, "k": self.k, "dim": self.dim, "encoder": self.encoder,
            "layer": self.layer, "frame_rate": self.frame_rate, "sample_rate": self.sample_rate,
            "fingerprint": self.fingerprint(), "info": dict(self.info),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``): arrays ``centroids`` and ``header`` (JSON text)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, centroids=self.centroids, header=np.array(json.dumps(self.header())))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Codebook":
        """Read a codebook written by :meth:`save` (no pickle).

        Raises:
            ConfigError: missing file, not a codebook, or centroids that disagree with the
                header.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"codebook not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                centroids = z["centroids"]
                header = json.loads(str(z["header"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path} is not a speechqe codebook: {exc}") from exc
        if header.get("format") != CODEBOOK_FORMAT:
            raise ConfigError(f"{path}: unknown codebook format {header.get('format')!r}")
        if tuple(centroids.shape) != (header["k"], header["dim"]):
            raise ConfigError(f"{path}: centroids {centroids.shape} disagree with its header")
        cb = cls(centroids=centroids, encoder=header["encoder"], layer=header["layer"],
                 frame_rate=float(header["frame_rate"]), sample_rate=int(header["sample_rate"]),
                 info=header.get("info", {}))
        if header.get("fingerprint") and header["fingerprint"] != cb.fingerprint():
            raise ConfigError(f"{path}: fingerprint mismatch (file altered?)")
        return cb

    def assign(self, features: np.ndarray, *, device: str = "cpu", chunk: int = 65536
               ) -> np.ndarray:
        """Nearest centroid (squared Euclidean) of each frame.

        Args:
            features: ``(frames, dim)``.
            device: ``cpu`` or ``cuda``.

        Returns:
            ``(frames,)`` int64 unit ids.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"features {x.shape} do not match codebook dim {self.dim}")
        return assign_nearest(x, self.centroids, device=device, chunk=chunk)


def assign_nearest(x: np.ndarray, centroids: np.ndarray, *, device: str = "cpu",
                   chunk: int = 65536) -> np.ndarray:
    """argmin_k ||x - c_k||^2 per row, in chunks, with torch (``||c||^2 - 2 x.c`` form)."""
    import torch

    dev = torch.device(device)
    c = torch.as_tensor(centroids, dtype=torch.float32, device=dev)
    c2 = (c * c).sum(1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        xb = torch.as_tensor(x[s:s + chunk], device=dev)
        out[s:s + chunk] = torch.argmin(c2[None, :] - 2 * xb @ c.T, dim=1).cpu().numpy()
    return out


# ------------------------------------------------------------------------------------------
# Mini-batch k-means over a stream
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KMeansConfig:
    """Mini-batch k-means settings.

    Attributes:
        k: number of units.
        batch_size: frames per update.
        epochs: passes over the feature stream.
        init_size: frames, drawn uniformly from the whole stream, for the k-means++
            seeding; default ``max(3 k, batch_size)``.
        backend: ``'auto'`` (= ``'torch'``, see the module docstring), ``'sklearn'`` or
            ``'torch'``.
        device: for the torch backend and for the final inertia pass.
        seed: random seed (seeding and reassignment).
    """

    k: int = 100
    batch_size: int = 10000
    epochs: int = 5
    init_size: int | None = None
    backend: str = "auto"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ConfigError("k must be at least 2")
        if self.backend not in ("auto", "sklearn", "torch"):
            raise ConfigError(f"backend must be auto, sklearn or torch (got {self.backend!r})")
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("batch_size and epochs must be >= 1")

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "torch"


def _batches(stream: FeatureStream, batch_size: int) -> Iterator[np.ndarray]:
    """Re-chunk a stream of ``(n_i, dim)`` arrays into ``(batch_size, dim)`` batches (the last
    one shorter)."""
    buf: list[np.ndarray] = []
    n = 0
    for chunk in stream():
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2:
            raise ConfigError(f"feature chunks must be (frames, dim), got {chunk.shape}")
        buf.append(chunk)
        n += chunk.shape[0]
        while n >= batch_size:
            allx = np.concatenate(buf)
            yield allx[:batch_size]
            rest = allx[batch_size:]
            buf, n = ([rest] if rest.size else []), rest.shape[0]
    if n:
        yield np.concatenate(buf)


def _uniform_sample(stream: FeatureStream, n: int, seed: int) -> np.ndarray:
    """``n`` frames drawn uniformly from the whole stream in one pass (bottom-n of random
    keys), so the seeding sees every part of the data, not just its first files."""
    rng = np.random.default_rng(seed)
    kept = None
    keys = np.zeros(0)
    for chunk in stream():
        x = np.asarray(chunk, dtype=np.float32)
        if x.shape[0] == 0:
            continue
        k = rng.random(x.shape[0])
        kept = x if kept is None else np.concatenate([kept, x])
        keys = np.concatenate([keys, k])
        if keys.size > n:
            idx = np.argpartition(keys, n)[:n]
            kept, keys = kept[idx], keys[idx]
    if kept is None:
        raise ConfigError("the feature stream is empty")
    return kept


def kmeans_pp(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding with scikit-learn (greedy, as MiniBatchKMeans does)."""
    from sklearn.cluster import kmeans_plusplus

    if x.shape[0] < k:
        raise ConfigError(f"{x.shape[0]} frames are too few to seed {k} centroids")
    centers, _ = kmeans_plusplus(x, k, random_state=seed)
    return centers.astype(np.float32)


def fit_kmeans(stream: FeatureStream, cfg: KMeansConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit centroids on a re-iterable stream of feature chunks.

    Args:
        stream: a callable returning a fresh iterable of ``(frames, dim)`` arrays each time
            (called once for the seeding, once per epoch and once for the final inertia).
        cfg: the settings.

    Returns:
        ``(centroids (K, dim) float32, info)`` where ``info`` has ``backend``, ``epochs``,
        ``frames`` (per epoch), ``inertia`` (mean squared distance per frame to its nearest
        centroid, final pass), ``empty`` (centroids assigned no frame) and ``seconds``.
    """
    t0 = time.perf_counter()
    backend = cfg.resolved_backend
    init_size = cfg.init_size or max(3 * cfg.k, cfg.batch_size)
    init = kmeans_pp(_uniform_sample(stream, init_size, cfg.seed), cfg.k, cfg.seed)
    if backend == "sklearn":
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=cfg.k, init=init, n_init=1, batch_size=cfg.batch_size,
                             random_state=cfg.seed)
        frames = 0
        for _ in range(cfg.epochs):
            frames = 0
            for xb in _batches(stream, cfg.batch_size):
                if xb.shape[0] < cfg.k and frames:  # a short tail batch adds little
                    continue
                km.partial_fit(xb)
                frames += xb.shape[0]
        centroids = km.cluster_centers_.astype(np.float32)
    else:
        centroids, frames = _torch_minibatch(stream, init, cfg)
    inertia, counts = _inertia(stream, centroids, cfg.device)
    info = {
        "backend": backend, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "frames": int(frames), "inertia": inertia, "empty": int((counts == 0).sum()),
        "seed": cfg.seed, "seconds": round(time.perf_counter() - t0, 3),
    }
    return centroids, info


def _torch_minibatch(stream: FeatureStream, init: np.ndarray, cfg: KMeansConfig
                     ) -> tuple[np.ndarray, int]:
    """Sculley's mini-batch k-means: each centre is the running mean of the frames ever
    assigned to it (per-centre counts); a centre still empty after an epoch is moved to a
    random frame of the last batch (as sklearn's reassignment of unused centres)."""
    import torch

    dev = torch.device(cfg.device)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    c = torch.as_tensor(init, device=dev).clone()
    counts = torch.zeros(c.shape[0], device=dev, dtype=torch.float64)
    frames = 0
    for _ in range(cfg.epochs):
        frames = 0
        last = None
        for xb_np in _batches(stream, cfg.batch_size):
            xb = torch.as_tensor(xb_np, device=dev)
            lab = torch.argmin((c * c).sum(1)[None, :] - 2 * xb @ c.T, dim=1)
            n_new = torch.bincount(lab, minlength=c.shape[0]).to(torch.float64)
            sums = torch.zeros_like(c, dtype=torch.float64).index_add_(0, lab, xb.double())
            tot = counts + n_new
            upd = n_new > 0
            c[upd] = ((c[upd].double() * counts[upd, None] + sums[upd]) / tot[upd, None]).float()
            counts = tot
            frames += xb.shape[0]
            last = xb
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel() and last is not None:
            pick = torch.randint(0, last.shape[0], (empty.numel(),), generator=g)
            c[empty] = last[pick.to(dev)]
    return c.cpu().numpy().astype(np.float32), frames


def _inertia(stream: FeatureStream, centroids: np.ndarray, device: str
             ) -> tuple[float, np.ndarray]:
    import torch

    dev = torch.device(device)
    c = torch.as_tensor(centroids, device=dev)
    c2 = (c * c).sum(1)
    total, n = 0.0, 0
    counts = torch.zeros(c.shape[0], dtype=torch.long, device=dev)
    for xb_np in _batches(stream, 65536):
        xb = torch.as_tensor(xb_np, device=dev)
        d = c2[None, :] - 2 * xb @ c.T
        dmin, lab = d.min(1)
        total += float(((xb * xb).sum(1) + dmin).clamp_min(0).double().sum())
        n += xb.shape[0]
        counts += torch.bincount(lab, minlength=c.shape[0])
    return total / max(n, 1), counts.cpu().numpy()


# ------------------------------------------------------------------------------------------
# Deduplication and bitrate
# ------------------------------------------------------------------------------------------
def deduplicate(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encode ``(frames,)`` units -> (units, durations in frames), both int64."""
    u = np.asarray(units, dtype=np.int64).reshape(-1)
    if u.size == 0:
        return u, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    durations = np.diff(np.r_[starts, u.size])
    return u[starts], durations.astype(np.int64)


def expand(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Inverse of :func:`deduplicate`."""
    return np.repeat(np.asarray(units, dtype=np.int64), np.asarray(durations, dtype=np.int64))


def entropy_bits(symbols: Iterable[int]) -> float:
    """Plug-in (maximum-likelihood) unigram entropy in bits per symbol."""
    counts = np.array(list(Counter(int(s) for s in symbols).values()), dtype=np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass(frozen=True)
class BitrateReport:
    """The bitrate of a unit stream.

    Attributes:
        frame_rate, k: the stream's rate (Hz) and vocabulary size.
        seconds, frames: audio covered and frame-level tokens.
        nominal_bps: ``frame_rate * log2(k)``.
        entropy_bits: unigram entropy of frame-level units (bits/token).
        empirical_bps: ``frame_rate * entropy_bits``.
        dedup_tokens_per_s: deduplicated tokens per second.
        dedup_entropy_bits: unigram entropy of deduplicated units (bits/token).
        dedup_bps: ``dedup_tokens_per_s * dedup_entropy_bits`` (units only, durations dropped,
            as when a duration predictor restores them).
        duration_entropy_bits: unigram entropy of the run lengths (bits/token).
        dedup_with_durations_bps: ``dedup_tokens_per_s * (dedup + duration entropy)``, an upper
            bound of the cost of sending both.
    """

    frame_rate: float
    k: int
    seconds: float
    frames: int
    nominal_bps: float
    entropy_bits: float
    empirical_bps: float
    dedup_tokens_per_s: float
    dedup_entropy_bits: float
    dedup_bps: float
    duration_entropy_bits: float
    dedup_with_durations_bps: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bitrate_report(sequences: Sequence[np.ndarray], frame_rate: float, k: int) -> BitrateReport:
    """Bitrates of frame-level unit ``sequences`` (one per utterance).

    Raises:
        ConfigError: no frames, or a unit id outside ``[0, k)``.
    """
    seqs = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    frames = int(sum(s.size for s in seqs))
    if frames == 0:
        raise ConfigError("no unit frames to measure a bitrate on")
    if any(s.size and (s.min() < 0 or s.max() >= k) for s in seqs):
        raise ConfigError(f"unit ids outside [0, {k})")
    seconds = frames / frame_rate
    flat = np.concatenate(seqs)
    h = entropy_bits(flat)
    dd = [deduplicate(s) for s in seqs]
    du = np.concatenate([d[0] for d in dd])
    dur = np.concatenate([d[1] for d in dd])
    tps = du.size / seconds
    hd, hdur = entropy_bits(du), entropy_bits(dur)
    return BitrateReport(
        frame_rate=frame_rate, k=k, seconds=seconds, frames=frames,
        nominal_bps=frame_rate * math.log2(k), entropy_bits=h, empirical_bps=frame_rate * h,
        dedup_tokens_per_s=tps, dedup_entropy_bits=hd, dedup_bps=tps * hd,
        duration_entropy_bits=hdur, dedup_with_durations_bps=tps * (hd + hdur),
    )


# ------------------------------------------------------------------------------------------
# Stored unit sequences
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitRecord:
    """One utterance's units.

    Attributes:
        id, path, sha256: the source item.
        units: ``(n,)`` int64: frame-level units, or deduplicated units when ``durations``.
        durations: ``(n,)`` frames per unit when deduplicated, else ``None``.
        frames: frame-level length.
        text, speaker: carried from the speech set.
    """

    id: str
    path: str
    sha256: str
    units: np.ndarray
    durations: np.ndarray | None
    frames: int
    text: str | None = None
    speaker: str | None = None

    def frame_units(self) -> np.ndarray:
        """Frame-level units (expanding deduplicated ones)."""
        return self.units if self.durations is None else expand(self.units, self.durations)


def write_units(path: str | Path, records: Iterable[UnitRecord], codebook: Codebook,
                dedup: bool) -> Path:
    """Write a units file: a JSON header line (format, codebook fingerprint and identity,
    ``dedup``), then one JSON object per utterance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    header = {"format": UNITS_FORMAT, "dedup": dedup, "codebook": codebook.fingerprint(),
              "k": codebook.k, "encoder": codebook.encoder, "layer": codebook.layer,
              "frame_rate": codebook.frame_rate}
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for r in records:
            f.write(json.dumps({
                "id": r.id, "path": r.path, "sha256": r.sha256, "frames": r.frames,
                "units": r.units.tolist(),
                "durations": None if r.durations is None else r.durations.tolist(),
                "text": r.text, "speaker": r.speaker,
            }, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_units(path: str | Path) -> tuple[dict[str, Any], list[UnitRecord]]:
    """Read a file written by :func:`write_units` -> ``(header, records)``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"units file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f if ln.strip()]
    if not lines:
        raise ConfigError(f"{path} is empty")
    header = json.loads(lines[0])
    if header.get("format") != UNITS_FORMAT:
        raise ConfigError(f"{path}: not a speechqe units file")
    out = []
    for ln in lines[1:]:
        d = json.loads(ln)
        out.append(UnitRecord(
            id=d["id"], path=d["path"], sha256=d["sha256"],
            units=np.asarray(d["units"], dtype=np.int64),
            durations=None if d["durations"] is None else np.asarray(d["durations"], np.int64),
            frames=int(d["frames"]), text=d.get("text"), speaker=d.get("speaker"),
        ))
    return header, out
