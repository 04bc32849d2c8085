"""Labelled MOS data: readers for the formats MOS teams have, and dataset specs.

* VoiceMOS Challenge 2022 / BVCC (``phase1-main`` and ``phase1-ood`` folders): the per-listener
  rating files ``DATA/sets/{TRAINSET,DEVSET,TESTSET}`` (``sysID,uttID,rating,ignore,
  listenerinfo``; the listener id is the third ``_`` field of listenerinfo), the mean-score
  lists ``DATA/sets/{train,val,test}_mos_list.txt`` (``uttID,mean``), audio in ``DATA/wav/``
  and the system scores ``DATA/mydata_system.csv``.
* SHEET / MOS-Bench CSVs (``wav_path, system_id, sample_id, avg_score`` and optionally one row
  per rating with ``listener_id, score``): :func:`speechqe.manifest.from_sheet_csv`.
* NISQA corpus CSVs (``db, con, filepath_deg, filepath_ref, mos`` and the dimension columns
  ``noi, col, dis, loud``), paths relative to the corpus root.
* speechqe JSONL manifests and folders (for prediction only: no labels).

Every reader returns a :class:`~speechqe.manifest.SpeechSet` whose items carry ``mos``,
``listener_scores`` (when known), ``system``, ``speaker``, ``text`` and a ``domain`` in
``extra`` (the listening test the labels come from; the strong learner embeds it).
"""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
from pathlib import Path

from speechqe.errors import ConfigError
from speechqe.manifest import SpeechSet, describe_file, from_folder, from_jsonl, from_sheet_csv

from .config import DATA_FORMATS as FORMATS  # noqa: F401 - re-exported
from .config import DataSpec


_BVCC_SPLITS = {
    "train": ("TRAINSET", "train_mos_list.txt"),
    "dev": ("DEVSET", "val_mos_list.txt"),
    "test": ("TESTSET", "test_mos_list.txt"),
}


def _bvcc_data_dir(root: str | Path) -> Path:
    root = Path(root)
    for cand in (root, root / "DATA"):
        if (cand / "sets").is_dir() and (cand / "wav").is_dir():
            return cand
    raise ConfigError(
        f"{root} is not a BVCC track folder (expected DATA/sets and DATA/wav, e.g. phase1-main)"
    )


def read_bvcc(root: str | Path, split: str = "train", *, domain: str | None = None) -> SpeechSet:
    """Read one split of a VoiceMOS 2022 track (``phase1-main`` or ``phase1-ood``).

    Per-listener ratings come from ``sets/<SPLIT>SET``; the utterance MOS from the mean-score
    list when present (the official label), else the mean of the ratings.

    Raises:
        ConfigError: unknown split, missing files, or a malformed line.
    """
    if split not in _BVCC_SPLITS:
        raise ConfigError(f"BVCC split must be one of {sorted(_BVCC_SPLITS)}, got '{split}'")
    data = _bvcc_data_dir(root)
    ratings_file, mos_file = _BVCC_SPLITS[split]
    ratings_path = data / "sets" / ratings_file
    mos_path = data / "sets" / mos_file
    ratings: dict[str, list[tuple[str, float]]] = defaultdict(list)
    systems: dict[str, str] = {}
    if ratings_path.is_file():
        with open(ratings_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split(",")
                if len(parts) < 5:
                    raise ConfigError(f"{ratings_path}:{n}: expected sysID,uttID,rating,_,listenerinfo")
                sys_id, utt, rating, info = parts[0], parts[1], parts[2], parts[-1]
                info_parts = info.split("_")
                if len(info_parts) < 3:
                    raise ConfigError(f"{ratings_path}:{n}: cannot read listener info {info!r}")
                ratings[utt].append((info_parts[2], float(rating)))
                systems[utt] = sys_id
    means: dict[str, float] = {}
    if mos_path.is_file():
        with open(mos_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    utt, mean = line.split(",")[:2]
                    means[utt] = float(mean)
                except ValueError as exc:
                    raise ConfigError(f"{mos_path}:{n}: expected uttID,mean") from exc
    if not ratings and not means:
        raise ConfigError(f"no BVCC {split} labels found ({ratings_path.name} / {mos_path.name}) in {data / 'sets'}")
    track = domain or data.parent.name or "bvcc"
    items = []
    for utt in sorted(set(ratings) | set(means)):
        scores = tuple(ratings.get(utt, ()))
        mos = means.get(utt)
        if mos is None:
            mos = sum(s for _, s in scores) / len(scores)
        stem = utt[:-4] if utt.endswith(".wav") else utt
        # BVCC utterance ids are sysID-uttID; the system comes from the ratings or the prefix.
        system = systems.get(utt) or stem.split("-")[0]
        items.append(describe_file(
            data / "wav" / (utt if utt.endswith(".wav") else utt + ".wav"),
            item_id=stem, system=system, mos=mos, listener_scores=scores,
            extra=(("domain", track),),
        ))
    return SpeechSet(tuple(items), name=f"bvcc-{track}-{split}", source=str(data))


def read_bvcc_system_mos(root: str | Path) -> dict[str, float]:
    """``DATA/mydata_system.csv`` (``system_ID,mean``): the system MOS over all of a system's
    ratings, the true system scores of the VoiceMOS Challenge's system-level metrics."""
    path = _bvcc_data_dir(root) / "mydata_system.csv"
    if not path.is_file():
        raise ConfigError(f"system MOS file not found: {path}")
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row or row[0].strip().lower() in ("system_id", "system", "sysid"):
                continue
            out[row[0].strip()] = float(row[1])
    return out


def read_nisqa(csv_path: str | Path, *, root: str | Path | None = None, db: str | None = None) -> SpeechSet:
    """Read a NISQA corpus CSV (``NISQA_corpus_file.csv`` or a per-database ``*_file.csv``).

    Args:
        root: folder the ``filepath_*`` columns are relative to (default: the CSV's folder).
        db: keep only rows of this database (``NISQA_TRAIN_SIM``, ``NISQA_TEST_LIVETALK``...).

    Items: ``system`` is ``db/con`` (the degradation condition), ``domain`` the database; the
    dimension scores (``noi, col, dis, loud``) are kept in ``extra``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"NISQA CSV not found: {csv_path}")
    base = Path(root) if root else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        need = {"filepath_deg", "mos"}
        if not need <= cols:
            raise ConfigError(f"{csv_path}: a NISQA CSV needs columns {sorted(need)}; found {sorted(cols)}")
        rows = [r for r in reader if db is None or r.get("db") == db]
    if not rows:
        raise ConfigError(f"{csv_path}: no rows" + (f" for db {db}" if db else ""))
    items = []
    seen: set[str] = set()
    for r in rows:
        deg = base / r["filepath_deg"]
        item_id = Path(r["filepath_deg"]).with_suffix("").as_posix()
        if item_id in seen:
            raise ConfigError(f"{csv_path}: file {r['filepath_deg']} appears twice")
        seen.add(item_id)
        dbname = r.get("db") or csv_path.stem
        con = r.get("con") or ""
        extra = [("domain", dbname)]
        extra += [(k, r[k]) for k in ("noi", "col", "dis", "loud", "mos_std", "votes") if r.get(k)]
        ref = r.get("filepath_ref")
        fields = {}
        if ref:
            ref_path = base / ref
            if ref_path.is_file():
                from speechqe.manifest import file_sha256

                fields = {"ref_path": str(ref_path.resolve()), "ref_sha256": file_sha256(ref_path)}
        items.append(describe_file(
            deg, item_id=item_id, system=f"{dbname}/{con}" if con else dbname,
            mos=float(r["mos"]), extra=tuple(sorted(extra)), **fields,
        ))
    return SpeechSet(tuple(items), name=db or csv_path.stem, source=str(csv_path))


def load_data(spec: DataSpec, *, base: Path | None = None) -> SpeechSet:
    """Read a :class:`DataSpec` (relative paths are resolved against ``base``)."""
    def rel(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() or base is None else base / q

    path = rel(spec.path)
    if spec.format == "bvcc":
        sset = read_bvcc(path, spec.split, domain=spec.domain or None)
    elif spec.format == "sheet":
        sset = from_sheet_csv(path, audio_root=rel(spec.audio_root) if spec.audio_root else None)
    elif spec.format == "nisqa":
        sset = read_nisqa(path, root=rel(spec.audio_root) if spec.audio_root else None, db=spec.db or None)
    elif spec.format == "jsonl":
        sset = from_jsonl(path)
    else:
        sset = from_folder(path)
    if spec.domain:
        sset = sset.map(lambda it: it.replace(extra=tuple(sorted({**dict(it.extra), "domain": spec.domain}.items()))))
    return sset


def domain_of(item) -> str:
    """The item's domain (listening test), ``'default'`` when unknown."""
    return item.get("domain") or "default"


def group_of(item, group_by: str) -> str | None:
    """The cross-validation group of an item: its ``system``, ``speaker``, ``text``, ``id``
    (``item``) or the value of an ``extra`` field (e.g. ``clip``, ``sentence``); ``None`` (or
    ``""``) when the item has none."""
    if group_by == "system":
        return item.system
    if group_by == "speaker":
        return item.speaker
    if group_by == "text":
        return item.text
    if group_by == "item":
        return item.id
    return item.get(group_by)


def groups_of(items, group_by: str) -> list[str]:
    """Every item's group (:func:`group_of`).

    Raises:
        ConfigError: some items have no value for ``group_by``: folds would silently put them
            in groups of their own and leak their speaker/sentence across folds; the message
            says how many and names some.
    """
    out = [group_of(it, group_by) for it in items]
    missing = [it.id for it, g in zip(items, out) if g is None or str(g).strip() == ""]
    if missing:
        where = {"speaker": "a 'speaker' column (SHEET CSV) or field (JSONL)",
                 "text": "a 'text' column (SHEET CSV), field (JSONL) or transcript"}.get(
                     group_by, f"a '{group_by}' column or field")
        raise ConfigError(
            f"group_by '{group_by}': {len(missing)} of {len(out)} items have no {group_by} "
            f"(e.g. {', '.join(missing[:3])}); give every item {where}, or choose another "
            "group_by (system, speaker, text, item or an extra column every item has)"
        )
    return [str(g) for g in out]


class AudioBank:
    """Decoded, validated signals of a speech set at one rate, cached in memory up to a budget.

    Training reads every item many times; decoding and resampling once per item keeps that
    cheap. Items whose audio cannot be used raise their typed :class:`ItemError` on access.
    """

    def __init__(self, sample_rate: int = 16000, max_bytes: int = 2 << 30):
        self.sample_rate = int(sample_rate)
        self.max_bytes = int(max_bytes)
        self._cache: dict[str, np.ndarray] = {}
        self._bytes = 0

    def get(self, item) -> np.ndarray:
        from speechqe.errors import item_error

        key = item.sha256 or item.path
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if not item.ok:
            raise item_error(item.error_type or "item_error", item.error or "unreadable item")
        x = item.load().at(self.sample_rate)  # honours a segment/channel (lhotse cuts)
        if self._bytes + x.nbytes <= self.max_bytes:
            self._cache[key] = x
            self._bytes += x.nbytes
        return x
