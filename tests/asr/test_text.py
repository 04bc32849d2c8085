"""Text normalisation and edit counting."""

from __future__ import annotations

import jiwer
import pytest

from speechqe.asr import count_edits, get_normalizer
from speechqe.asr.normalize import BasicNormalizer, char_tokens, resolve_name
from speechqe.errors import ConfigError


def test_english_uses_whispers_normaliser():
    norm = get_normalizer("auto", "en")
    assert norm("Mr. Smith paid $20 for two colours!") == "mister smith paid $20 for 2 colors"
    assert norm("Um, I won't go.") == "i will not go"
    assert resolve_name("auto", "en") == "whisper-english"
    assert resolve_name("auto", "de") == "basic"


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!  [laughter] (aside) don't stop-gap -- yes…", "hello world don't stop-gap yes"),
    ("Ｆｕｌｌ　ｗｉｄｔｈ ﬁne", "full width fine"),
    ("Straße, « café » ?", "strasse café"),
    ("我爱你，中国！", "我爱你 中国"),
    ("  ", ""),
])
def test_basic_normaliser(text, expected):
    assert BasicNormalizer()(text) == expected


def test_basic_normaliser_keeps_combining_marks():
    """Whisper's BasicTextNormalizer turns combining vowel signs into spaces and splits Hindi
    words; ours keeps the words whole (the reason we do not use it)."""
    from whisper.normalizers import BasicTextNormalizer

    text = "नमस्ते दुनिया।"
    assert BasicNormalizer()(text).split() == ["नमस्ते", "दुनिया"]
    assert len(BasicTextNormalizer()(text).split()) > 2


def test_unknown_normaliser_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown normalizer"):
        get_normalizer("fancy", "en")


def test_edit_counts_match_jiwer_and_hand_counts():
    e = count_edits("the cat sat on the mat", "the cat sat on a mat today")
    assert (e.hits, e.substitutions, e.deletions, e.insertions) == (5, 1, 0, 1)
    assert e.ref_len == 6 and e.rate == pytest.approx(2 / 6)
    assert e.rate == pytest.approx(jiwer.wer("the cat sat on the mat", "the cat sat on a mat today"))
    c = count_edits("ab c", "ab d", "char")
    assert (c.hits, c.substitutions, c.deletions, c.insertions) == (3, 1, 0, 0)
    assert count_edits("a b", "", "word").deletions == 2
    with pytest.raises(ValueError, match="empty"):
        count_edits(" ", "a")


def test_languages_without_spaces_compare_characters():
    assert char_tokens("我爱 你", "zh") == "我爱你"
    assert char_tokens("a b", "en") == "a b"
    e = count_edits(char_tokens("我爱你中国", "zh"), char_tokens("我 爱 他中国", "zh"), "char")
    assert (e.hits, e.substitutions, e.ref_len) == (4, 1, 5)
