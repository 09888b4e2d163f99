"""Content words: the words of a text that carry its meaning, for cheap lexical checks
(does an answer add anything to the question? is a statement's wording in a passage?)."""

from __future__ import annotations

import re
import threading
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS_TEXT = """
a an the and or but of to in on at for with by from is are was were be been it this that these
those as into its their there which who what when where how why do does did can will would
should could may might not no yes you your we our they i he she them his her
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def words(text: str) -> list[str]:
    """Lower-case words and numbers, in order."""
    return _WORD.findall(text.lower())


_local = threading.local()  # a Snowball stemmer keeps state while it works: one per thread


def _stemmer() -> Any:
    if not hasattr(_local, "stemmer"):
        import snowballstemmer

        _local.stemmer = snowballstemmer.stemmer("english")
    return _local.stemmer


def stem(word: str) -> str:
    """The word's English (Snowball) stem: "versioning", "versions" -> "version"."""
    return str(_stemmer().stemWord(word))


def content_words(text: str) -> list[str]:
    """The stems of the text's words that are not stop words, in order."""
    return [stem(w) for w in words(text) if w not in _STOPWORDS]
