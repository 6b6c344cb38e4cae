"""A built-in language identifier from script and function-word statistics.

Two steps, both cheap and dependency-free:
1. The script of the letters (Unicode ranges): Cyrillic, Greek, Arabic, Hebrew, Devanagari,
   Thai, Hangul, Kana and Han map straight to a language (ru, el, ar, he, hi, th, ko, ja, zh).
2. Latin-script text is told apart by function words, which make up roughly half of
   running text in European languages (the 100 most common English words cover about 50%
   of the Oxford English Corpus); the language whose stopword list covers most tokens wins.
The score is the share of letters in the winning script times, for Latin text, the
winner's share of the stopword hits of it and its closest rival, scaled down when stopwords are rarer than in prose
(below 25% of tokens, e.g. code or word lists).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache

STOPWORDS = {
    "en": "the of and to a in is that it was for on are as with his they at be this from have or by "
          "one had not but what all were when we there can an which their if will each about how up out "
          "them then she many some so these would other into has more her two like him see time could no "
          "make than been its who now people my made over did down only way find use may long very after",
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an "
          "werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war "
          "haben nur oder aber vor zur bis mehr durch man sein wurde sei",
    "fr": "le de la et les des en un du une que est pour qui dans par plus au pas sur ne se il sont ce "
          "avec ou mais sa son aussi nous elle leur comme tout été fait cette ses deux ont ces même entre "
          "sans dont lui",
    "es": "de la que el en y a los del se las por un para con no una su al es lo como más pero sus le ya "
          "o este sí porque esta entre cuando muy sin sobre también me hasta hay donde quien desde todo "
          "nos durante todos uno les ni contra otros ese eso ante ellos están",
    "it": "di e il la che in a per un del non le si è con da una i dei al della sono nel gli come più ma "
          "anche alla lo ha questo delle o se nella degli sua suo ci essere tra quando loro",
    "pt": "de a o que e do da em um para é com não uma os no se na por mais as dos como mas foi ao ele das "
          "tem à seu sua ou ser quando muito há nos já está eu também só pelo pela até isso ela entre",
    "nl": "de en van het een in is dat op te zijn voor met die niet aan er om ook als dan maar bij nog door "
          "wordt worden was uit naar kan ze zich heeft hij tot over deze",
}
_STOPWORD_SETS = {language: frozenset(words.split()) for language, words in STOPWORDS.items()}

SCRIPT_LANGUAGES = {
    "CYRILLIC": "ru", "GREEK": "el", "ARABIC": "ar", "HEBREW": "he", "DEVANAGARI": "hi",
    "THAI": "th", "HANGUL": "ko", "HIRAGANA": "ja", "KATAKANA": "ja", "CJK": "zh",
}
TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)
EXPECTED_STOPWORD_SHARE = 0.25
MAX_CHARS = 4000
"""Characters examined; the start of a document decides its language."""


def known_languages() -> frozenset[str]:
    """Every code `identify` can return (besides "unknown"); validate reads it (R126) so that a
    language filter never lists a language this identifier cannot report."""
    return frozenset(STOPWORDS) | frozenset(SCRIPT_LANGUAGES.values())


@lru_cache(maxsize=65536)
def script_of(char: str) -> str:
    """The script of a letter: the first word of its Unicode name (LATIN, CYRILLIC, CJK, ...)."""
    if char.isascii():
        return "LATIN"
    try:
        name = unicodedata.name(char)
    except ValueError:
        return "OTHER"
    return name.split(" ", 1)[0]


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code or "unknown", confidence in [0, 1])."""
    sample = text[:MAX_CHARS]
    scripts = Counter(map(script_of, filter(str.isalpha, sample)))
    letters = sum(scripts.values())
    if not letters:
        return "unknown", 0.0
    script, count = scripts.most_common(1)[0]
    share = count / letters
    if script in SCRIPT_LANGUAGES:
        language = SCRIPT_LANGUAGES[script]
        if language == "zh" and scripts["HIRAGANA"] + scripts["KATAKANA"] > 0.05 * letters:
            language = "ja"  # Japanese mixes kanji with kana; Chinese has no kana
        return language, share
    if script != "LATIN":
        return "unknown", 0.0
    return _latin_language(sample, share)


def _latin_language(sample: str, latin_share: float) -> tuple[str, float]:
    tokens = [token.lower() for token in TOKEN.findall(sample)]
    if not tokens:
        return "unknown", 0.0
    hits = {language: sum(token in words for token in tokens) for language, words in _STOPWORD_SETS.items()}
    ranked = sorted(sorted(hits), key=lambda language: -hits[language])
    best, runner_up = ranked[0], ranked[1]
    if hits[best] == 0:
        return "unknown", 0.0
    # short function words are shared ("a", "de", "en"): compare with the closest rival only
    dominance = hits[best] / (hits[best] + hits[runner_up])
    coverage = min(1.0, hits[best] / len(tokens) / EXPECTED_STOPWORD_SHARE)
    return best, latin_share * dominance * coverage
