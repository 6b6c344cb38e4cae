"""A generated corpus with known answers: English-like prose, planted duplicates and junk.

Every document carries its ground truth in `meta`:
    kind: "clean" | "exact_dup" | "near_dup" | "junk"
    original: the id a duplicate was copied from
    edit_fraction: the fraction of sentences a near-duplicate changed (5-20%, the range
        the issue asks for; a typical web near-duplicate differs in a few sentences of
        header, footer or comments)
    junk_type: "short" | "symbol_soup" | "repeated_lines" | "boilerplate" | "foreign"
Tests and benchmarks score the filters and dedup against this record.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from specc.runtime.data.documents import Document
from specc.spec.data import SyntheticSource

NOUNS = (
    "river", "garden", "teacher", "village", "engine", "letter", "window", "market", "forest", "doctor",
    "bridge", "student", "kitchen", "mountain", "library", "captain", "farmer", "painter", "harbor", "station",
    "island", "journey", "machine", "meadow", "museum", "neighbor", "orchard", "palace", "pilot", "planet",
    "question", "record", "school", "season", "signal", "soldier", "stone", "story", "summer", "table",
    "theory", "tower", "valley", "voice", "winter", "writer", "answer", "bottle", "candle", "castle",
    "circle", "cloud", "coast", "company", "council", "country", "desert", "engineer", "family", "festival",
    "figure", "flower", "friend", "government", "hammer", "history", "horse", "hunter", "language", "lesson",
    "lantern", "merchant", "minute", "morning", "mother", "nation", "ocean", "office", "paper", "picture",
    "poem", "problem", "product", "railway", "region", "science", "shadow", "silver", "sister", "spirit",
    "square", "stream", "surface", "system", "ticket", "traveler", "village", "weather", "wheel", "window",
)
ADJECTIVES = (
    "old", "quiet", "bright", "careful", "distant", "early", "famous", "gentle", "heavy", "honest",
    "large", "little", "modern", "narrow", "patient", "proud", "rapid", "simple", "small", "strange",
    "strong", "sudden", "warm", "wide", "wise", "young", "ancient", "busy", "calm", "clever",
    "common", "curious", "deep", "empty", "fresh", "golden", "green", "hidden", "local", "lucky",
    "northern", "open", "pale", "private", "quick", "rare", "rural", "silent", "southern", "steady",
)
VERBS = (
    "follow", "carry", "open", "watch", "build", "describe", "explain", "find", "keep", "leave",
    "move", "notice", "offer", "paint", "protect", "reach", "remember", "repair", "share", "study",
    "support", "visit", "change", "collect", "cross", "discover", "enjoy", "examine", "finish", "gather",
    "guide", "imagine", "improve", "join", "mention", "measure", "observe", "prepare", "present", "question",
    "receive", "record", "replace", "return", "review", "search", "teach", "test", "touch", "wash",
)
ADVERBS = (
    "slowly", "quickly", "often", "rarely", "carefully", "quietly", "eventually", "usually", "suddenly",
    "gradually", "always", "sometimes", "finally", "clearly", "openly", "gently", "happily", "nearly",
)
PREPOSITIONS = ("near", "behind", "across", "beyond", "under", "above", "inside", "along", "around", "beside")
DETERMINERS = ("the", "a", "every", "another", "this", "that", "each", "one")

TEMPLATES = (
    "The {adj} {noun} {verbs} the {noun2} {prep} the {adj2} {noun3}.",
    "{Adv}, a {noun} {verbs} {det} {noun2} that {verbs2} {det2} {noun3}.",
    "When the {noun} {verbs} {det} {noun2}, the {adj} {noun3} {verbs2} {adv}.",
    "It is {adj} that the {noun} {verbs} {det} {noun2} and the {noun3}.",
    "Many {noun}s {verb} {prep} the {noun2} because they {verb2} {det} {adj} {noun3}.",
    "The {noun} of the {adj} {noun2} {adv} {verbs} what the {noun3} {verbs2}.",
    "Nobody knew why the {adj} {noun} {verbs} {det} {noun2} {prep} the {noun3}.",
    "In the {adj} {noun}, {det} {noun2} {verbs} the {adj2} {noun3} {adv}.",
)

FOREIGN = {
    "de": ("Der {n} und die {n} sind nicht mit dem {n}, aber es ist auch ein {n} für die {n}.",
           ("Hund", "Stadt", "Zeit", "Arbeit", "Schule", "Wasser", "Haus", "Frage", "Straße", "Kirche")),
    "fr": ("Le {n} et la {n} ne sont pas dans le {n}, mais il est aussi une {n} pour les {n}.",
           ("chien", "ville", "temps", "travail", "école", "maison", "question", "rue", "église", "mer")),
    "es": ("El {n} y la {n} no están en el {n}, pero es también una {n} para los {n} de la {n}.",
           ("perro", "ciudad", "tiempo", "trabajo", "escuela", "casa", "pregunta", "calle", "iglesia", "mar")),
    "ru": ("Это {n} и {n} не было в {n}, но он также был для {n} на {n}.",
           ("собака", "город", "время", "работа", "школа", "вода", "дом", "вопрос", "улица", "церковь")),
}
MENU_ITEMS = ("Home", "About us", "Contact", "Privacy policy", "Terms of use", "Careers", "Blog", "Press",
              "Sitemap", "Help center", "Login", "Register", "Newsletter", "Shop", "Cart")
JUNK_TYPES = ("short", "symbol_soup", "repeated_lines", "boilerplate", "foreign")


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def sentence(rng: random.Random) -> str:
    adverb = rng.choice(ADVERBS)
    words = {
        "adj": rng.choice(ADJECTIVES), "adj2": rng.choice(ADJECTIVES),
        "noun": rng.choice(NOUNS), "noun2": rng.choice(NOUNS), "noun3": rng.choice(NOUNS),
        "verb": rng.choice(VERBS), "verb2": rng.choice(VERBS),
        "verbs": _third_person(rng.choice(VERBS)), "verbs2": _third_person(rng.choice(VERBS)),
        "adv": adverb, "Adv": adverb.capitalize(), "prep": rng.choice(PREPOSITIONS),
        "det": rng.choice(DETERMINERS), "det2": rng.choice(DETERMINERS),
    }
    return rng.choice(TEMPLATES).format(**words)


def prose_sentences(rng: random.Random, min_sentences: int = 10, max_sentences: int = 30) -> list[str]:
    return [sentence(rng) for _ in range(rng.randint(min_sentences, max_sentences))]


def join_paragraphs(sentences: list[str], rng: random.Random) -> str:
    """Group sentences into paragraphs of 3 to 6 sentences separated by blank lines."""
    paragraphs, start = [], 0
    while start < len(sentences):
        size = rng.randint(3, 6)
        paragraphs.append(" ".join(sentences[start:start + size]))
        start += size
    return "\n\n".join(paragraphs)


def near_duplicate(sentences: list[str], edit_fraction: float, rng: random.Random) -> list[str]:
    """Replace, delete or insert about `edit_fraction` of the sentences."""
    edited = list(sentences)
    for _ in range(max(1, round(edit_fraction * len(sentences)))):
        operation = rng.choice(("replace", "delete", "insert"))
        position = rng.randrange(len(edited))
        if operation == "replace":
            edited[position] = sentence(rng)
        elif operation == "delete" and len(edited) > 3:
            del edited[position]
        else:
            edited.insert(position, sentence(rng))
    return edited


def junk_text(junk_type: str, rng: random.Random) -> str:
    if junk_type == "short":
        return sentence(rng)
    if junk_type == "symbol_soup":
        symbols = "#$%&*@!^~|+=<>{}[]0123456789"
        tokens = ["".join(rng.choice(symbols) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(80, 200))]
        return " ".join(tokens)
    if junk_type == "repeated_lines":
        line = sentence(rng)
        return "\n".join([line] * rng.randint(10, 30))
    if junk_type == "boilerplate":
        lines = []
        for _ in range(rng.randint(12, 24)):
            if rng.random() < 0.5:
                lines.append(f"• {rng.choice(MENU_ITEMS)}")
            else:
                lines.append(" ".join(sentence(rng).split()[:6]) + "...")
        return "\n".join(lines)
    language = rng.choice(sorted(FOREIGN))
    template, nouns = FOREIGN[language]
    pieces = template.split("{n}")
    sentences = ["".join(piece + rng.choice(nouns) for piece in pieces[:-1]) + pieces[-1]
                 for _ in range(rng.randint(8, 20))]
    return join_paragraphs(sentences, rng)


@dataclass
class Generated:
    document: Document
    sentences: list[str]


def _kinds(source: SyntheticSource, rng: random.Random) -> list[str]:
    total = source.num_documents
    duplicates = round(total * source.duplicate_fraction)
    junk = min(round(total * source.junk_fraction), total - duplicates)
    kinds = ["clean"] * (total - duplicates - junk) + ["dup"] * duplicates + ["junk"] * junk
    rng.shuffle(kinds)
    # a duplicate needs an earlier clean original: move the first clean document to the front
    if "clean" in kinds and kinds[0] != "clean":
        first = kinds.index("clean")
        kinds[0], kinds[first] = kinds[first], kinds[0]
    return kinds


def generate(source: SyntheticSource) -> Iterator[Generated]:
    """The documents of a synthetic source in order, each with its ground truth in `meta`."""
    rng = random.Random(source.seed)
    originals: list[Generated] = []
    for index, kind in enumerate(_kinds(source, rng)):
        doc_id = f"{source.name}-{index:06d}"
        if kind == "junk" or (kind == "dup" and not originals):
            junk_type = rng.choice(JUNK_TYPES)
            text = junk_text(junk_type, rng)
            yield Generated(Document(source.name, doc_id, text, {"kind": "junk", "junk_type": junk_type}), [])
            continue
        if kind == "clean":
            sentences = prose_sentences(rng)
            generated = Generated(Document(source.name, doc_id, join_paragraphs(sentences, rng), {"kind": "clean"}),
                                  sentences)
            originals.append(generated)
            yield generated
            continue
        original = rng.choice(originals)
        if rng.random() < 1 / 3:
            meta = {"kind": "exact_dup", "original": original.document.id}
            yield Generated(Document(source.name, doc_id, original.document.text, meta), original.sentences)
            continue
        edit_fraction = round(rng.uniform(0.05, 0.20), 3)
        sentences = near_duplicate(original.sentences, edit_fraction, rng)
        meta = {"kind": "near_dup", "original": original.document.id, "edit_fraction": edit_fraction}
        yield Generated(Document(source.name, doc_id, join_paragraphs(sentences, rng), meta), sentences)
