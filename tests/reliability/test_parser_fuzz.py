"""Fuzzed speech-set readers (Hypothesis): JSONL manifests, transcript files and SHEET CSVs.

Whatever the file holds, a reader returns items or raises a typed
:class:`~speechqe.errors.ConfigError` that names the file and the line; never another
exception (a traceback for the user) and never a silently wrong set. Audio files named in a
manifest that are missing or not audio become items with an error record, not a failure of the
whole read.

The readers belong to speechqe/manifest.py (input readers); where these properties find a hole
today the test is an ``xfail(strict=True)`` naming it, with the smallest failing input found
pinned as an ``@example`` so that the failure does not depend on the random search.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import write_tone
from speechqe import manifest
from speechqe.errors import ConfigError

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

WAVS = ("a.wav", "b.wav", "sub/c.wav")  # written once per test folder
NAMES = st.sampled_from(WAVS + ("missing.wav", "not-audio.wav", "../outside.wav", "sub",
                                "é ü/ñ.wav", "a.wav\x00x", ""))
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def _folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    for k, name in enumerate(WAVS):
        write_tone(root / name, seconds=0.05, seed=k)
    (root / "not-audio.wav").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory)


def _names_line(msg: str, path: Path, line: int | None) -> bool:
    """``msg`` names the file (its path, its name, or, for errors about the whole set such
    as duplicate ids, the set's name, which is the file's stem) and ``line``."""
    if str(path) not in msg and path.name not in msg and not (line is None and path.stem in msg):
        return False
    if line is None:
        return True
    return bool(re.search(rf"(:{line}\b|line {line}\b)", msg))


# ------------------------------------------------------------------------------------------
# JSONL manifests
# ------------------------------------------------------------------------------------------
ITEM = st.fixed_dictionaries(
    {"path": NAMES},
    optional={"id": st.text(max_size=10), "system": st.text(max_size=6),
              "text": st.one_of(st.text(max_size=20), st.none()),
              "mos": st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=4), st.none()),
              "speaker": st.text(max_size=5), "ref_path": NAMES,
              "extra": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
              "listener_scores": st.lists(st.tuples(st.text(max_size=3), st.floats(1, 5)), max_size=2)})
LINES = st.lists(st.one_of(ITEM.map(json.dumps), JSON_VALUES.map(json.dumps),
                           st.text(max_size=30).map(lambda t: t.replace("\n", " ").replace("\r", " "))),
                 min_size=1, max_size=6)


def _check_jsonl(folder: Path, lines: list[str]) -> None:
    path = folder / "fuzz.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        sset = manifest.from_jsonl(path)
    except ConfigError as exc:
        # the line the reader stopped at is named (or the whole file, for duplicate ids)
        assert _names_line(str(exc), path, None), str(exc)
        return
    assert len(sset) == sum(1 for ln in lines if ln.strip())
    for it in sset:  # an unreadable or missing file is an item with its error, not a crash
        assert it.ok or (it.error_type and it.error)


@FUZZ
@given(LINES)
@example(["5"])  # a number, not an object: TypeError
@example(['{"path": 5}'])  # a path that is not a string
def test_jsonl_manifest_items_or_config_error(folder, lines):
    _check_jsonl(folder, lines)


@FUZZ
@given(st.lists(ITEM.filter(lambda d: isinstance(d.get("mos", 0.0), (int, float, type(None)))
                            and "\x00" not in d["path"] and "\x00" not in d.get("ref_path", "")
                            and d.get("listener_scores") is None)
                .map(json.dumps), min_size=1, max_size=5))
def test_jsonl_manifest_of_well_typed_objects(folder, lines):
    """Objects with a string path and well-typed fields: items, or a ConfigError naming the file
    (duplicate ids, unknown fields never stop it: they go to ``extra``)."""
    _check_jsonl(folder, lines)


# ------------------------------------------------------------------------------------------
# Transcript files
# ------------------------------------------------------------------------------------------
TRANSCRIPT_LINES = st.lists(st.one_of(
    st.tuples(st.text(max_size=8), st.text(max_size=20)).map(lambda kv: f"{kv[0]}\t{kv[1]}"),
    st.text(max_size=20)).map(lambda t: t.replace("\n", " ").replace("\r", " ")), max_size=6)


@FUZZ
@given(TRANSCRIPT_LINES)
def test_transcripts_table_or_config_error_with_line(folder, lines):
    path = folder / "fuzz.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        table = manifest.read_transcripts(path)
    except ConfigError as exc:
        line = int(re.search(r":(\d+):", str(exc)).group(1)) if re.search(r":(\d+):", str(exc)) else None
        assert line is not None and _names_line(str(exc), path, line), str(exc)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())
    assert len(table) <= len(lines)


@FUZZ
@given(st.binary(min_size=1, max_size=60))
@example(b"u1\tcaf\xe9\n")  # latin-1
def test_transcripts_bytes_or_config_error(folder, raw):
    path = folder / "fuzz-bytes.tsv"
    path.write_bytes(raw)
    try:
        manifest.read_transcripts(path)
    except ConfigError as exc:
        assert _names_line(str(exc), path, None), str(exc)


# ------------------------------------------------------------------------------------------
# SHEET / MOS-Bench CSVs
# ------------------------------------------------------------------------------------------
CELL = st.one_of(st.text(max_size=8), st.sampled_from(["3.5", "1", "", "nan", "inf", "-2", "x"]))


@st.composite
def sheet_rows(draw, well_typed: bool):
    cols = ["wav_path", "system_id", "sample_id", "avg_score"]
    extra = draw(st.lists(st.sampled_from(["listener_id", "score", "domain", "x"]), max_size=2,
                          unique=True))
    header = draw(st.permutations(cols + extra))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = {c: draw(CELL) for c in header}
        row["wav_path"] = draw(NAMES.filter(lambda n: "\x00" not in n))
        if well_typed:
            row["avg_score"] = draw(st.sampled_from(["", "1", "3.25", "5"]))
            if "score" in row:
                row["score"] = draw(st.sampled_from(["", "2", "4.5"]))
        rows.append([row[c] for c in header])
    ragged = not well_typed and draw(st.booleans())
    if ragged and rows:  # a row with a cell more than the header
        rows[0].append("surplus")
    return header, rows


def _check_sheet(folder: Path, header, rows) -> None:
    path = folder / "fuzz.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    try:
        sset = manifest.from_sheet_csv(path)
    except ConfigError as exc:
        assert _names_line(str(exc), path, None), str(exc)
        return
    assert len(sset) == len({r[header.index("sample_id")].strip() for r in rows})


@FUZZ
@given(sheet_rows(well_typed=True))
def test_sheet_csv_of_well_typed_rows(folder, hr):
    _check_sheet(folder, *hr)


@FUZZ
@given(sheet_rows(well_typed=False))
@example((["wav_path", "system_id", "sample_id", "avg_score"], [["a.wav", "s", "i", "x"]]))
@example((["wav_path", "system_id", "sample_id", "avg_score"], [["a.wav", "s", "i", "3", "surplus"]]))
def test_sheet_csv_items_or_config_error(folder, hr):
    _check_sheet(folder, *hr)


def test_sheet_csv_with_a_byte_order_mark(folder):
    path = folder / "bom.csv"
    path.write_text("wav_path,system_id,sample_id,avg_score\na.wav,s,a,3.5\n", encoding="utf-8-sig")
    assert len(manifest.from_sheet_csv(path)) == 1
