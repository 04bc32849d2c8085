"""Word differences between a reference transcript and an ASR hypothesis, for display.

The alignment is jiwer's (the Levenshtein alignment its WER uses), so the marks agree with the
edit counts of the WER metric when both are computed on the same normalised text. Nothing here
produces markup: the spans are data, and the report's templates (autoescaped) draw them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PUNCT = re.compile(r"[^\w\s']+", re.UNICODE)


def display_normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: only used when the ASR record
    did not store its own normalised strings."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


@dataclass(frozen=True)
class WordOp:
    """One aligned span: ``kind`` is ``equal``, ``substitute``, ``delete`` (in the reference
    only) or ``insert`` (in the hypothesis only)."""

    kind: str
    ref: tuple[str, ...]
    hyp: tuple[str, ...]


def align_words(reference: str, hypothesis: str) -> list[WordOp]:
    """Align two whitespace-tokenised strings (already normalised)."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words and not hyp_words:
        return []
    if not ref_words:
        return [WordOp("insert", (), tuple(hyp_words))]
    if not hyp_words:
        return [WordOp("delete", tuple(ref_words), ())]
    import jiwer

    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    ops = []
    for chunk in out.alignments[0]:
        ops.append(
            WordOp(
                chunk.type,
                tuple(ref_words[chunk.ref_start_idx : chunk.ref_end_idx]),
                tuple(hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]),
            )
        )
    return ops


@dataclass(frozen=True)
class Span:
    """Words of one side of the alignment: ``kind`` as in :class:`WordOp`, ``text`` the words
    joined by single spaces (plain text, never markup)."""

    kind: str
    text: str


@dataclass
class WordDiff:
    """Both lines of a diff and its edit counts (words)."""

    ref: list[Span] = field(default_factory=list)
    hyp: list[Span] = field(default_factory=list)
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0


def diff_words(reference: str, hypothesis: str) -> WordDiff:
    """The reference and hypothesis lines as spans (deleted words appear on the reference
    line only, inserted words on the hypothesis line only) and the edit counts."""
    d = WordDiff(ref_words=len(reference.split()))
    for op in align_words(reference, hypothesis):
        r, h = " ".join(op.ref), " ".join(op.hyp)
        if op.kind in ("equal", "substitute"):
            d.ref.append(Span(op.kind, r))
            d.hyp.append(Span(op.kind, h))
            if op.kind == "substitute":
                d.substitutions += len(op.ref)
        elif op.kind == "delete":
            d.ref.append(Span(op.kind, r))
            d.deletions += len(op.ref)
        elif op.kind == "insert":
            d.hyp.append(Span(op.kind, h))
            d.insertions += len(op.hyp)
        else:  # pragma: no cover - jiwer's alignment has only these four kinds
            raise ValueError(f"unknown alignment kind {op.kind!r}")
    return d
