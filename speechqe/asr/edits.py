"""Edit counts between a reference and a hypothesis, with jiwer (Levenshtein alignment).

Corpus WER is ``sum(S + D + I) / sum(N)`` over utterances (``N`` = reference words), which is why
every utterance stores its counts rather than only its ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from speechqe.errors import MissingDependencyError

Unit = Literal["word", "char"]


@dataclass(frozen=True)
class EditCounts:
    """Alignment counts of one utterance.

    Attributes:
        hits, substitutions, deletions, insertions: Levenshtein alignment counts.
        ref_len: reference length in units (words or characters) = hits + substitutions +
            deletions.
    """

    hits: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def ref_len(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """errors / reference length (may exceed 1 with insertions); requires ``ref_len > 0``."""
        return self.errors / self.ref_len

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_edits(reference: str, hypothesis: str, unit: Unit = "word") -> EditCounts:
    """Align ``hypothesis`` to ``reference`` and count edits.

    Args:
        reference, hypothesis: already normalised strings. ``unit='word'`` splits them on
            whitespace; ``unit='char'`` compares characters (spaces included).
    Raises:
        ValueError: the reference is empty (an error rate is undefined).
    """
    if not reference.strip():
        raise ValueError("the reference is empty after normalisation")
    try:
        import jiwer
    except ImportError as exc:  # pragma: no cover - jiwer is a core dependency
        raise MissingDependencyError("jiwer", "models", "WER/CER") from exc
    if unit == "word":
        out = jiwer.process_words(reference, hypothesis if hypothesis.strip() else "")
    elif unit == "char":
        out = jiwer.process_characters(reference, hypothesis)
    else:
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    return EditCounts(int(out.hits), int(out.substitutions), int(out.deletions),
                      int(out.insertions))
