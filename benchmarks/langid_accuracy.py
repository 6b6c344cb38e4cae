"""Language identification: accuracy per language and documents/s, packaged lid.176 vs the
script/stopword identifier specc used before (and py3langid, when it is installed).

    .venv/bin/python benchmarks/langid_accuracy.py [--docs 60] [--runs 3] [--json out.json]

The multilingual set is built from packaged text, nothing downloaded: the translated messages
of the gettext catalogs that Debian packages install under /usr/share/locale/<locale>/LC_MESSAGES
(coreutils, tar, apt, ...). Swahili comes from VLC's catalog (Debian `vlc-l10n`, installed by
scripts/setup-langid-bench.sh: 247 Swahili messages; the base system's `sw` files hold country
and month names only). A message counts when its translation differs from its English
msgid and has at least 4 words (12 characters for zh/ja, written without spaces); format
placeholders are removed; three messages (seeded order) make one document. Languages with too
few messages on this machine are listed as skipped. The earlier identifier is read from git
(commit BASELINE) so the comparison stays runnable after its removal.
"""

from __future__ import annotations

import argparse
import gettext
import json
import random
import re
import statistics
import subprocess
import time
from collections import Counter
import types
from pathlib import Path

from specc.runtime.data import langid

ROOT = Path(__file__).resolve().parents[1]
LOCALE_DIR = Path("/usr/share/locale")
BASELINE = "cfb21d2"
"""The last commit whose specc/runtime/data/langid.py is the script/stopword identifier."""
LOCALES = {  # locale directory -> the ISO 639-1 code lid.176 reports
    "pl": "pl", "nb": "no", "uk": "uk", "fa": "fa", "sw": "sw", "zh_CN": "zh", "ja": "ja", "de": "de",
    "fr": "fr", "es": "es", "it": "it", "pt": "pt", "ru": "ru", "ar": "ar", "tr": "tr", "vi": "vi",
    "ko": "ko", "nl": "nl", "sv": "sv", "fi": "fi", "cs": "cs", "hu": "hu", "el": "el", "he": "he",
    "hi": "hi", "id": "id", "th": "th", "da": "da", "ro": "ro",
}
PLACEHOLDER = re.compile(r"%(\d+\$)?[-#0 +']*\d*(\.\d+)?(l|ll|h|z|j)?[a-zA-Z%]|\{[^}]*\}|`[^']*'|&")
MESSAGES_PER_DOC = 3


def messages(locale: str) -> list[str]:
    """Translated messages of every catalog of one locale, placeholders removed, deduplicated."""
    found: set[str] = set()
    for path in sorted((LOCALE_DIR / locale / "LC_MESSAGES").glob("*.mo")):
        try:
            with open(path, "rb") as stream:
                catalog = gettext.GNUTranslations(stream)._catalog  # noqa: SLF001 - the parsed .mo
        except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error") else OSError):
            continue
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid or not isinstance(value, str) or value == msgid:
                continue
            text = " ".join(PLACEHOLDER.sub(" ", value).split())
            long_enough = len(text) >= 12 if locale in ("zh_CN", "ja") else len(text.split()) >= 4
            if long_enough:
                found.add(text)
    return sorted(found)


def build_set(num_docs: int, seed: int = 0) -> tuple[dict[str, list[str]], list[str]]:
    """code -> documents, and the locales skipped for lack of text."""
    documents, skipped = {}, []
    for locale, code in LOCALES.items():
        texts = messages(locale)
        random.Random(seed).shuffle(texts)
        docs = [" ".join(texts[i:i + MESSAGES_PER_DOC]) for i in range(0, len(texts) - MESSAGES_PER_DOC + 1,
                                                                        MESSAGES_PER_DOC)][:num_docs]
        if len(docs) < 10:
            skipped.append(f"{locale} ({len(texts)} messages; scripts/setup-langid-bench.sh installs the catalogs)")
            continue
        documents[code] = docs
    return documents, skipped


def baseline_identifier():
    """`identify` of the earlier built-in identifier, or None when git cannot show it."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:specc/runtime/data/langid.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("specc_langid_baseline")
    exec(compile(source, "baseline_langid.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.identify


def py3langid_identifier():
    try:
        import py3langid
    except ImportError:
        return None
    return py3langid.classify


def confusions(identify, documents: dict[str, list[str]], code: str) -> str:
    """The wrong answers for one language, most frequent first (`da 21, sv 3`)."""
    wrong = Counter(answer for d in documents[code] if (answer := identify(d)[0]) != code)
    return ", ".join(f"{answer} {count}" for answer, count in wrong.most_common(4)) or "-"


def measure(identify, documents: dict[str, list[str]], runs: int) -> tuple[dict[str, float], float]:
    """Accuracy per language, and the median docs/s over `runs` passes over the whole set."""
    accuracy = {code: sum(identify(d)[0] == code for d in docs) / len(docs) for code, docs in documents.items()}
    everything = [d for docs in documents.values() for d in docs]
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for document in everything:
            identify(document)
        rates.append(len(everything) / (time.perf_counter() - started))
    return accuracy, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=60, help="documents per language")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    documents, skipped = build_set(args.docs)
    identifiers = {"before (script+stopwords)": baseline_identifier(), "lid.176 (packaged)": langid.identify,
                   "py3langid": py3langid_identifier()}
    identifiers = {name: f for name, f in identifiers.items() if f is not None}
    langid.identify("warm up: load the model once")
    results = {name: measure(f, documents, args.runs) for name, f in identifiers.items()}
    names = list(results)
    print(f"{sum(map(len, documents.values()))} documents, {len(documents)} languages "
          f"(from /usr/share/locale gettext catalogs); skipped: {', '.join(skipped) or 'none'}")
    print("| language | docs | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for code, docs in documents.items():
        print(f"| {code} | {len(docs)} | " + " | ".join(f"{results[n][0][code]:.2f}" for n in names) + " |")
    print("| **mean** | | " + " | ".join(f"{statistics.mean(results[n][0].values()):.3f}" for n in names) + " |")
    print("| docs/s (median of %d) | | " % args.runs + " | ".join(f"{results[n][1]:,.0f}" for n in names) + " |")
    print("\nlid.176's wrong answers: " + "; ".join(f"{code}: {confusions(langid.identify, documents, code)}"
                                                   for code in documents if results["lid.176 (packaged)"][0][code] < 0.95))
    if args.json:
        args.json.write_text(json.dumps({n: {"accuracy": a, "docs_per_s": r} for n, (a, r) in results.items()},
                                        indent=1))


if __name__ == "__main__":
    main()
