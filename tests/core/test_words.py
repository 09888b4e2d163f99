"""Content words for the lexical checks."""

from __future__ import annotations

from slmops.core.words import content_words, stem, words


def test_words_are_lower_case_and_numbers_count() -> None:
    assert words("The Bears won 46-10!") == ["the", "bears", "won", "46", "10"]


def test_stop_words_go_and_inflections_share_a_stem() -> None:
    assert content_words("How do I version a prompt?") == ["version", "prompt"]
    assert stem("versioning") == stem("versions") == stem("versioned") == "version"
    assert content_words("Angola achieved independence") == content_words(
        "angola achieve independent"
    )
