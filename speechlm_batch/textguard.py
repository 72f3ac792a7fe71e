"""Runaway-output guard: collapse n-gram repetition loops that speech decoders fall into on noise."""

from __future__ import annotations

MAX_NGRAM_WORDS = 8
KEEP_REPEATS = 2  # a loop of "a b a b a b a b" keeps "a b a b"
MIN_REPEATS_TO_FIRE = 4  # fewer repeats can be real speech ("no no no")


def collapse_loops(text: str) -> tuple[str, int]:
    """Collapse every run of >= MIN_REPEATS_TO_FIRE consecutive copies of an n-gram; return text and count."""
    words = text.split()
    fired = 0
    n = 1
    while n <= MAX_NGRAM_WORDS:
        words, count = _collapse_ngram(words, n)
        fired += count
        n += 1
    return (" ".join(words), fired) if fired else (text, 0)


def _collapse_ngram(words: list[str], n: int) -> tuple[list[str], int]:
    out: list[str] = []
    fired, i = 0, 0
    while i < len(words):
        gram = words[i : i + n]
        repeats = 1
        while len(gram) == n and words[i + repeats * n : i + (repeats + 1) * n] == gram:
            repeats += 1
        if len(gram) == n and repeats >= MIN_REPEATS_TO_FIRE:
            out.extend(gram * KEEP_REPEATS)
            fired += 1
            i += repeats * n
        else:
            out.append(words[i])
            i += 1
    return out, fired
