"""Text normalisation before WER/CER.

Three normalisers, picked by name or by language (:func:`get_normalizer`):

* ``whisper-english`` (default for ``en``): openai-whisper's ``EnglishTextNormalizer`` — the
  convention of the Whisper paper and of most TTS papers (Seed-TTS-eval, F5-TTS): lower case,
  spelled-out numbers and currencies to digits, British to American spelling, contractions and
  titles expanded, fillers (``um``, ``uh``) and bracketed text removed, punctuation removed.
* ``basic`` (default for every other language), :class:`BasicNormalizer`:

  1. Unicode NFKC (full-width forms and ligatures folded, composed characters kept);
  2. ``str.casefold()`` (language-independent lower-casing; ``ß`` -> ``ss``);
  3. text in ``[...]``, ``<...>`` and ``(...)`` removed (annotations such as ``[laughter]``);
  4. every character of Unicode category P (punctuation) or S (symbols) replaced by a space,
     except an apostrophe or hyphen *between two letters* (``don't``, ``porte-monnaie``), which
     are part of the word;
  5. whitespace runs collapsed to one space, ends stripped.

  It deliberately keeps combining marks (category M). Whisper's own ``BasicTextNormalizer``
  replaces them with spaces, which splits words of Devanagari, Bengali, Tamil, Thai and other
  abugidas into fragments (``"नमस्ते"`` becomes four "words") and inflates WER on them; this is
  why we do not use it (tested in ``tests/asr/test_normalize.py``).
* ``none``: whitespace collapsed only.

Characters (:func:`char_tokens`): CER compares the normalised strings character by character
(a space counts as a character between words, as in jiwer's ``cer`` and ESPnet's scoring). For
languages written without spaces between words (:data:`NO_SPACE_LANGUAGES`) spaces are removed
first, and WER is computed on characters too (so it equals CER), the Seed-TTS-eval convention
for Chinese and Japanese.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

from speechqe.errors import ConfigError, MissingDependencyError

#: ISO 639-1 codes of languages written without spaces between words.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue"})

NORMALIZERS = ("auto", "whisper-english", "basic", "none")

_BRACKETED = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_WS = re.compile(r"\s+")


def _is_letter(c: str) -> bool:
    return unicodedata.category(c)[0] in "LMN"


class BasicNormalizer:
    """The documented language-independent normaliser (see the module docstring)."""

    def __call__(self, text: str) -> str:
        s = unicodedata.normalize("NFKC", text).casefold()
        s = _BRACKETED.sub(" ", s)
        out = []
        n = len(s)
        for i, c in enumerate(s):
            cat = unicodedata.category(c)
            if cat[0] in "PS":
                joiner = c in "'’-‐" and 0 < i < n - 1 and _is_letter(s[i - 1]) and _is_letter(s[i + 1])
                out.append("'" if joiner and c in "'’" else c if joiner else " ")
            else:
                out.append(c)
        return _WS.sub(" ", "".join(out)).strip()


class WhitespaceNormalizer:
    """Collapse whitespace only (``normalizer='none'``)."""

    def __call__(self, text: str) -> str:
        return _WS.sub(" ", text).strip()


class WhisperEnglishNormalizer:
    """openai-whisper's ``EnglishTextNormalizer`` (whitespace collapsed after it)."""

    def __init__(self) -> None:
        try:
            from whisper.normalizers import EnglishTextNormalizer
        except ImportError as exc:
            raise MissingDependencyError(
                "openai-whisper", "models", "the Whisper English text normaliser"
            ) from exc
        self._impl = EnglishTextNormalizer()

    def __call__(self, text: str) -> str:
        return _WS.sub(" ", self._impl(text)).strip()


def resolve_name(name: str, language: str | None) -> str:
    """``auto`` -> ``whisper-english`` for English, ``basic`` otherwise."""
    if name not in NORMALIZERS:
        raise ConfigError(f"unknown normalizer {name!r}; known: {', '.join(NORMALIZERS)}")
    if name == "auto":
        return "whisper-english" if (language or "en").lower().startswith("en") else "basic"
    return name


@lru_cache(maxsize=8)
def get_normalizer(name: str = "auto", language: str | None = "en") -> Callable[[str], str]:
    """The normaliser called ``name`` (``auto``: by ``language``)."""
    name = resolve_name(name, language)
    if name == "whisper-english":
        return WhisperEnglishNormalizer()
    if name == "basic":
        return BasicNormalizer()
    return WhitespaceNormalizer()


def writes_without_spaces(language: str | None) -> bool:
    return (language or "").lower().split("-")[0] in NO_SPACE_LANGUAGES


def char_tokens(normalised: str, language: str | None) -> str:
    """The string compared by CER: the normalised text, without spaces for languages written
    without them."""
    return normalised.replace(" ", "") if writes_without_spaces(language) else normalised
