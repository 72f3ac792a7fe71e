"""Text normalizers the Open ASR Leaderboard scores with, by revision. Pure logic, no I/O.

Three normalizers (docs: leaderboard-and-peers.md §1.2; upstream `normalizer/normalizer.py` and
`normalizer/data_utils.py` of huggingface/open_asr_leaderboard @ d1e99b2):

* `classic`: Whisper's `EnglishTextNormalizer`, imported from the pinned `openai-whisper` package (the board's
  normalizer up to 2026-04 was a copy of it).
* `english-2026`: the same pipeline with the 2026 rules (commits 9f7a6b4, 5429f77, b61c3d3; PR #142): more
  filler words, "'s" expanded to "is" only after pronouns, a fixed compound list applied after symbol
  removal, a few more / corrected spellings, name-variant folding, and acronym collapsing. It is built on
  Whisper's class: the numbers and spellings steps of its `__call__` are wrapped, so the 2026 steps run
  exactly where the board runs them (compounds before numbers; names, acronyms after spellings).
* `multilingual`: the board's `BasicMultilingualTextNormalizer(remove_diacritics=False)` rules, then digits
  spelled out with `num2words` for the language.

The lists below are small, written here, and each says where its rule is documented; the spelling map is
Whisper's `english.json` with the board's few changes applied on top.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

Normalizer = Callable[[str], str]

CLASSIC = "whisper-english (openai-whisper 20250625)"
ENGLISH_2026 = "open-asr-leaderboard english 2026 (rules of d1e99b2)"
MULTILINGUAL = "open-asr-leaderboard basic-multilingual + num2words (rules of d1e99b2)"

# 2026 filler words removed with Whisper's (hmm, mm, mhm, mmm, uh, um): `EnglishTextNormalizer.ignore_patterns`.
EXTRA_FILLERS = ("ah", "aha", "ahh", "ahm", "eh", "ehehe", "em", "hm", "huh", "hum", "mhum", "uhm", "umm", "uhuh")
# "'s" means "is" only after these words in the 2026 rules; elsewhere it is a possessive and left alone.
IS_CONTRACTION_WORDS = ("it", "he", "she", "what", "that", "who", "here", "there", "how", "when", "where", "why", "this")
# The board's changes to Whisper's english.json: added entries, corrected targets, and removed keys (the
# American spelling is the target, so the American-to-British keys went).
SPELLING_ADDITIONS = {
    "ok": "okay", "kay": "okay", "etcetera": "etc", "mm": "hmm", "flyer": "flier",
    "archaeological": "archeological", "cancellation": "cancelation", "cancellations": "cancelations",
    "travelogue": "travelog", "travelogues": "travelogs",
    "archaeology": "archeology", "pummelled": "pummeled", "pummelling": "pummeling", "snowploughs": "snowplows",
}
SPELLING_REMOVALS = ("archeological", "cancelation", "cancelations", "flyer / flier", "travelog", "travelogs")
# Multi-word forms joined after hyphens became spaces ("wi-fi" -> "wi fi" -> "wifi"); the board's compound map.
COMPOUNDS = (
    ("et cetera", "etc"), ("al right", "alright"), ("all right", "alright"), ("how ever", "however"),
    ("wi fi", "wifi"), ("hi fi", "hifi"), ("lo fi", "lofi"), ("sci fi", "scifi"), ("e mail", "email"),
    ("e book", "ebook"), ("e commerce", "ecommerce"), ("x ray", "xray"), ("t shirt", "tshirt"),
    ("a m", "am"), ("p m", "pm"), ("o k", "okay"),
)
# Given-name spelling variants folded to one form (the board's name map; a short selection of its most common
# entries, so rare names may still differ from the board by a word).
NAME_VARIANTS = {
    "alan": "allen", "allan": "allen", "micheal": "michael", "michele": "michelle", "phillip": "philip",
    "stacey": "stacy", "stacie": "stacy", "tracey": "tracy", "tracie": "tracy", "carole": "carol",
    "carroll": "carol", "carrol": "carol", "allison": "alison", "alyson": "alison", "russel": "russell",
    "gregg": "greg", "garry": "gary", "charley": "charlie", "charly": "charlie", "kelley": "kelly",
    "kelli": "kelly", "lilly": "lily", "mollie": "molly", "sallie": "sally", "bret": "brett",
}
# Acronym runs: single characters joined when the run is this long; runs holding the words "a" or "i" need more.
ACRONYM_MIN_RUN = 2
ACRONYM_MIN_RUN_WITH_WORDS = 3
ACRONYM_WORDS = ("a", "i")


def collapse_acronyms(text: str) -> str:
    """Join runs of single-character words into one word: "b b c" -> "bbc", "5 g" -> "5g", "a b" stays."""
    out: list[str] = []
    run: list[str] = []
    for word in [*text.split(), ""]:  # "" ends the last run
        if len(word) == 1 and word.isalnum():
            run.append(word)
            continue
        needed = ACRONYM_MIN_RUN_WITH_WORDS if any(w in ACRONYM_WORDS for w in run) else ACRONYM_MIN_RUN
        out.extend(["".join(run)] if len(run) >= needed else run)
        run = []
        if word:
            out.append(word)
    return " ".join(out)


def _word_map(mapping: dict[str, str]) -> Normalizer:
    return lambda s: " ".join(mapping.get(word, word) for word in s.split())


def _compound_patterns(pairs: Iterable[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(r"\b" + r"\s+".join(map(re.escape, spaced.split())) + r"\b"), joined) for spaced, joined in pairs]


@functools.cache
def classic_english() -> Normalizer:
    """Whisper's EnglishTextNormalizer (built once: it reads the spelling map, and `whisper` imports torch)."""
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


@functools.cache
def english_2026() -> Normalizer:
    """The 2026 English normalizer (see the module docstring for the rules and where they run)."""
    from whisper.normalizers import EnglishTextNormalizer

    normalizer = EnglishTextNormalizer()
    fillers = normalizer.ignore_patterns.removesuffix(r")\b") + "|" + "|".join(EXTRA_FILLERS) + r")\b"
    normalizer.ignore_patterns = fillers
    pronoun_is = (r"\b(" + "|".join(IS_CONTRACTION_WORDS) + r")'s\b", r"\1 is")
    normalizer.replacers = dict(pronoun_is if key == r"'s\b" else (key, value) for key, value in normalizer.replacers.items())
    spellings = {k: v for k, v in normalizer.standardize_spellings.mapping.items() if k not in SPELLING_REMOVALS}
    spellings.update(SPELLING_ADDITIONS)
    numbers, compounds = normalizer.standardize_numbers, _compound_patterns(COMPOUNDS)
    spell, names = _word_map(spellings), _word_map(NAME_VARIANTS)

    def compounds_then_numbers(s: str) -> str:
        for pattern, joined in compounds:
            s = pattern.sub(joined, s)
        return numbers(s)

    normalizer.standardize_numbers = compounds_then_numbers
    normalizer.standardize_spellings = lambda s: collapse_acronyms(names(spell(s)))
    return normalizer


def multilingual(language: str) -> Normalizer:
    """The board's multilingual normalizer for `language` (ISO 639-1): diacritics kept, digits spelled out."""
    return functools.partial(_multilingual, language=language)


def _multilingual(text: str, language: str) -> str:
    from whisper.normalizers.basic import remove_symbols

    s = text.lower()
    s = re.sub(r"[<\[][^>\]]*[>\]]", "", s)  # bracketed tags: [noise], <unk>
    s = re.sub(r"\(([^)]+?)\)", "", s)  # parenthesised asides
    s = remove_symbols(s).lower()
    s = re.sub(r"[^\w\s]", "", s)
    s = re.sub(r"\s+", " ", s).strip()
    return spell_numbers(s, language)


def spell_numbers(text: str, language: str) -> str:
    """Digits as words in `language` via num2words; "10 000" is one number. Unsupported languages keep digits."""
    from num2words import num2words

    def words(match: re.Match[str]) -> str:
        try:
            return num2words(int(match.group()), lang=language)
        except (NotImplementedError, OverflowError, ValueError):  # num2words lacks the language or the size
            return match.group()

    text = re.sub(r"(\d)\s+(\d{3})\b", r"\1\2", text)
    return re.sub(r"\d+", words, text)
