"""Word differences between a reference transcript and an ASR hypothesis, for display.

The alignment is jiwer's (the Levenshtein alignment its WER uses), so the marks agree with the
edit counts of the WER metric when both are computed on the same normalised text. All text is
HTML-escaped here: a transcript is data, never markup.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

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


def diff_html(reference: str, hypothesis: str) -> tuple[str, str, dict[str, int]]:
    """Two HTML fragments (reference line, hypothesis line) with the differences marked, and
    the edit counts ``{substitutions, deletions, insertions, ref_words}``."""
    esc = html.escape
    ref_parts: list[str] = []
    hyp_parts: list[str] = []
    counts = {"substitutions": 0, "deletions": 0, "insertions": 0,
              "ref_words": len(reference.split())}
    for op in align_words(reference, hypothesis):
        r, h = esc(" ".join(op.ref)), esc(" ".join(op.hyp))
        if op.kind == "equal":
            ref_parts.append(r)
            hyp_parts.append(h)
        elif op.kind == "substitute":
            ref_parts.append(f'<span class="w-sub" title="substituted">{r}</span>')
            hyp_parts.append(f'<span class="w-sub" title="substitution">{h}</span>')
            counts["substitutions"] += len(op.ref)
        elif op.kind == "delete":
            ref_parts.append(f'<del class="w-del" title="deleted by the ASR">{r}</del>')
            counts["deletions"] += len(op.ref)
        elif op.kind == "insert":
            hyp_parts.append(f'<ins class="w-ins" title="inserted by the ASR">{h}</ins>')
            counts["insertions"] += len(op.hyp)
    return " ".join(ref_parts), " ".join(hyp_parts), counts
