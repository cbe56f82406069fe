"""CLIP-format BPE tokenizers of the built-in models: one token per world word (builtin:shapes), or
CLIP's own BPE cut to its first N merges (builtin:scenes).

Writes ``vocab.json`` + ``merges.txt`` (+ config files) that ``transformers.CLIPTokenizer`` reads
under both transformers 4.x (slow, python BPE) and 5.x (tokenizers backend). Every world word
becomes a single ``word</w>`` token; unknown words fall back to letters.
"""

from __future__ import annotations

import json
from pathlib import Path

from locedit.io import atomic_path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MODEL_MAX_LENGTH = 16  # tokens incl. BOS/EOS; the longest world caption is 13 words = 15 tokens
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word (same algorithm as transformers' slow CLIPTokenizer.bpe)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def build_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that turn each of ``words`` into one token (prefix chains, fixed until stable)."""
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        acc = parts[0]
        for p in parts[1:]:
            pair = (acc, p)
            if pair not in merges:
                merges.append(pair)
            acc = acc + p
    for _ in range(100):  # a merge of one word may fire inside another: repair by appending merges
        ranks = {m: i for i, m in enumerate(merges)}
        broken = [(w, _bpe(w, ranks)) for w in words if len(_bpe(w, ranks)) > 1]
        if not broken:
            return merges
        for _, parts in broken:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
    raise RuntimeError("could not build single-token merges for the vocabulary")


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges): letters, letters</w>, merge results, then BOS, EOS last."""
    merges = build_merges(words)
    tokens = list(_LETTERS) + [c + "</w>" for c in _LETTERS]
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def _write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_configs(folder: Path, max_length: int) -> None:
    """special_tokens_map.json and tokenizer_config.json of a CLIPTokenizer folder."""
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    _write_text(folder / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": True,
        "add_prefix_space": False,
        **special,
    }
    _write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def write_tokenizer(folder: str | Path, words: list[str], max_length: int = MODEL_MAX_LENGTH) -> Path:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, configs) for ``words``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    _write_text(folder / "vocab.json", json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    _write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    _write_configs(folder, max_length)
    return folder


def write_bpe_tokenizer(folder: str | Path, bpe_gz: str | Path, merges: int, max_length: int = 77) -> Path:
    """Write a CLIPTokenizer folder of CLIP's own BPE cut to its first ``merges`` merges; returns it.

    ``bpe_gz`` is the ``bpe_simple_vocab_16e6.txt.gz`` file OpenAI CLIP and open_clip ship. The ids are
    the real CLIP tokenizer's for every token the cut keeps; rarer words split into more subwords.
    """
    from locedit.models.tiny import clip_tokenizer_files

    folder = Path(folder)
    clip_tokenizer_files(bpe_gz, folder, merges=merges)
    _write_configs(folder, max_length)
    return folder
