"""Typos are not edits: check that a pair's key and value are words the model knows.

`locedit edit builtin:shapes --remove striped --to plian` would otherwise write a valid-looking edit
that maps "striped" onto a string the model never read. Two rules, one per situation:

- The model ships its training captions (its folder has locedit_corpus.txt): a concept that no
  caption names (as whole words, case-insensitive, as the key-caption mining matches) is unknown.
  Suggestions: the closest words of those captions (difflib).
- No shipped corpus: a word the tokenizer only spells out letter by letter is unknown: it is not
  one vocabulary entry and at least half of its letters come as single-letter pieces ("xqz" → x·q·z).
  Real words and names of CLIP's vocabulary pass: "van gogh" is two whole-word tokens, "klimt"
  (k·lim·t) has 2 of its 5 letters alone, "hokusai" (ho·ku·sai) none. A typo of a real word usually
  splits into longer pieces ("plian" → p·lian) and passes this rule: without the model's captions
  only spelled-out strings can be told from rare words. Suggestions: the closest whole-word entries
  of the tokenizer's vocabulary (those ending in "</w>").

quickfix warns about each problem; the CLI refuses the edit unless --force.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from locedit.edit.quickfix import CORPUS_FILE, names_concept, read_corpus
from locedit.models import text_encoders

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters: digits and punctuation are not judged
# A word is spelled out when at least this share of its letters come as single-letter BPE pieces.
SPELLED_OUT_SHARE = 0.5
# At most this many suggestions per unknown word.
SUGGESTIONS = 3
CAPTIONS, VOCABULARY = "in its captions", "of its tokenizer's vocabulary"  # where suggestions come from


class UnknownConceptWarning(UserWarning):
    """quickfix was given a key or value the model does not seem to know (see check_concepts)."""


def model_corpus(pipe) -> list[str] | None:
    """The captions the model ships (its folder's locedit_corpus.txt), or None if it ships none."""
    folder = getattr(pipe, "name_or_path", None)
    file = Path(folder) / CORPUS_FILE if folder else None
    return read_corpus(file) if file is not None and file.is_file() else None


def words(text: str) -> list[str]:
    """The lower-case words (runs of letters) of `text`."""
    return _WORD.findall(text.lower())


def spelled_out(tokenizer, word: str) -> list[str] | None:
    """The BPE pieces of `word` (without "</w>") if the tokenizer only spells it out, else None."""
    pieces = [p.removesuffix("</w>") for p in tokenizer.tokenize(word)]
    pieces = [p for p in pieces if p]
    letters = sum(len(p) for p in pieces)
    alone = sum(len(p) for p in pieces if len(p) == 1)
    return pieces if len(pieces) >= 2 and alone >= SPELLED_OUT_SHARE * letters else None


def _closest(word: str, known: Sequence[str], where: str) -> str:
    """ "closest words <where> to 'word': 'a', 'b'", or that none is close (difflib ratio < 0.6)."""
    found = difflib.get_close_matches(word, known, n=SUGGESTIONS, cutoff=0.6)
    if not found:
        return f"no word {where} is close to {word!r}"
    return f"closest words {where} to {word!r}: " + ", ".join(repr(w) for w in found)


def _tokenizer_words(tokenizer) -> list[str]:
    """The whole-word entries of a CLIP BPE vocabulary ("plain</w>" → "plain"), letters only."""
    return sorted({t[:-4] for t in tokenizer.get_vocab() if t.endswith("</w>") and t[:-4].isalpha()})


def check_concepts(pipe, pairs: Sequence[tuple[str, str]], corpus: Sequence[str] | None) -> list[str]:
    """Problems with the keys and values of `pairs`, one sentence each; [] when all look known.

    Args:
        pipe: the pipeline (its tokenizers judge words when there is no corpus).
        pairs: (key, value) concepts.
        corpus: the captions the model was trained on (model_corpus(pipe)), or None: then only
            spelled-out words are problems (see the module docstring).
    """
    problems: list[str] = []
    concepts = [(role, c) for pair in pairs for role, c in zip(("key", "value"), pair)]
    if corpus is not None:
        known = {w for caption in corpus for w in words(caption)}
        vocabulary = sorted(known)
        for role, concept in concepts:
            if any(names_concept(caption, concept) for caption in corpus):
                continue
            unknown = [w for w in words(concept) if w not in known]
            hint = (
                "; ".join(_closest(w, vocabulary, CAPTIONS) for w in unknown)
                if unknown
                else "its words occur, but never together"
            )
            problems.append(f"{role} {concept!r}: no caption of the model names it ({hint})")
        return problems
    for handle in text_encoders(pipe):
        vocabulary = None
        for role, concept in concepts:
            for word in words(concept):
                pieces = spelled_out(handle.tokenizer, word)
                if pieces is None:
                    continue
                vocabulary = vocabulary or _tokenizer_words(handle.tokenizer)
                problem = (
                    f"{role} {concept!r}: the tokenizer only spells out {word!r} ({'·'.join(pieces)}), so the "
                    f"model hardly knows it ({_closest(word, vocabulary, VOCABULARY)})"
                )
                if problem not in problems:
                    problems.append(problem)
    return problems
