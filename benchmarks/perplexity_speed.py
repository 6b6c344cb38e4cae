"""Perplexity filter speed: words/s of the KenLM route vs specc's pure-Python Kneser-Ney scoring,
on the same model (the Kneser-Ney fit written as ARPA, so all give the same perplexities).

    .venv/bin/python benchmarks/perplexity_speed.py [--order 5] [--docs 2000] [--runs 5] [--text prose]

Three scorers of one document at a time, as the filter calls them:
- pure-Python Kneser-Ney: `KneserNeyLM.perplexity` (the filter before KenLM);
- KenLM, regex words: the KenLM route before its text preparation was cut (`tokenize`, one
  Python string per word, joined), kept here as the baseline;
- KenLM now: `KenLMScorer.perplexity` (`kenlm_sentence`: str/bytes methods over the document).

`--text prose`: specc's seeded synthetic prose (2,000 reference documents fit the model, `--docs`
others are scored; ASCII). `--text gettext`: translated messages of the gettext catalogs installed
under /usr/share/locale (pl, ru, uk, de, el, fa, ja, zh_CN; as benchmarks/langid_accuracy.py reads
them), 20 per document, every other document for the reference: non-ASCII letters and punctuation.

Each run times every scorer back to back over all documents (so the load of a shared machine
falls on all of them alike); the figures are medians over `--runs`, both wall-clock words/s and
words per CPU-second of this process (steadier on a busy machine). Words count `</s>`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from specc.runtime.data.ngram_lm import MAX_TOKENS, KenLMScorer, KneserNeyLM, tokenize
from specc.runtime.data.synthetic import join_paragraphs, prose_sentences

GETTEXT_LOCALES = ("pl", "ru", "uk", "de", "el", "fa", "ja", "zh_CN")
MESSAGES_PER_DOC = 20


def prose(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [join_paragraphs(prose_sentences(rng), rng) for _ in range(count)]


def prose_texts(docs: int) -> tuple[list[str], list[str]]:
    return prose(2000, seed=1), prose(docs, seed=2)


def gettext_texts(docs: int) -> tuple[list[str], list[str]]:
    """Documents of translated messages, alternately reference and scored."""
    from langid_accuracy import messages  # benchmarks/ is the script's directory

    rng = random.Random(3)
    found = [message for locale in GETTEXT_LOCALES for message in messages(locale)]
    rng.shuffle(found)
    documents = ["\n".join(found[i:i + MESSAGES_PER_DOC]) for i in range(0, len(found), MESSAGES_PER_DOC)]
    return documents[0::2], documents[1::2][:docs]


def regex_words_route(scorer: KenLMScorer) -> Callable[[str], float]:
    """The KenLM route before this benchmark's change: a Python string per word, then one call."""
    model = scorer._loaded()  # noqa: SLF001 - the same loaded model as `scorer`

    def perplexity(text: str) -> float:
        tokens = tokenize(text)[:MAX_TOKENS]
        return 10.0 ** (-model.score(" ".join(tokens), bos=True, eos=True) / (len(tokens) + 1))

    return perplexity


def timed_rates(scorers: dict[str, Callable[[str], float]], texts: list[str], runs: int) -> dict[str, tuple]:
    """(median wall words/s, median CPU words/s) per scorer, each run timing all scorers in turn."""
    words = sum(len(tokenize(text)[:MAX_TOKENS]) + 1 for text in texts)
    wall: dict[str, list[float]] = {name: [] for name in scorers}
    cpu: dict[str, list[float]] = {name: [] for name in scorers}
    for _ in range(runs):
        for name, score in scorers.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            for text in texts:
                score(text)
            cpu[name].append(words / (time.process_time() - cpu_start))
            wall[name].append(words / (time.perf_counter() - wall_start))
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in scorers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--text", choices=["prose", "gettext"], default="prose")
    args = parser.parse_args()
    reference, texts = (prose_texts if args.text == "prose" else gettext_texts)(args.docs)
    model = KneserNeyLM(args.order).fit(reference)
    with tempfile.TemporaryDirectory() as directory:
        scorer = KenLMScorer(model.save_arpa(Path(directory) / "lm.arpa"))
        before = regex_words_route(scorer)
        same = all(scorer.perplexity(t) == before(t) for t in texts)
        worst = max(abs(scorer.perplexity(t) / model.perplexity(t) - 1) for t in texts[:200])
        rates = timed_rates({"pure-Python Kneser-Ney": model.perplexity, "KenLM, regex words": before,
                             "KenLM now": scorer.perplexity}, texts, args.runs)
    words = sum(len(tokenize(text)[:MAX_TOKENS]) + 1 for text in texts)
    print(f"{args.text}, order {args.order}, {len(texts)} documents, {words:,} words (with </s>); "
          f"KenLM now == regex-words route on every document: {same}; largest relative difference "
          f"from the pure-Python perplexity on 200 documents: {worst:.2e}")
    python_wall, python_cpu = rates["pure-Python Kneser-Ney"]
    print(f"{'scorer':24} {'words/s (wall)':>15} {'ratio':>7} {'words/CPU-s':>13} {'ratio':>7}   "
          f"(medians of {args.runs})")
    for name, (wall, cpu) in rates.items():
        print(f"{name:24} {wall:15,.0f} {wall / python_wall:6.1f}x {cpu:13,.0f} {cpu / python_cpu:6.1f}x")


if __name__ == "__main__":
    main()
