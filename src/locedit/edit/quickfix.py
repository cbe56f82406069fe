"""DIFF-QUICKFIX: closed-form ridge edit of a projection of a text encoder's layer-0 self-attention.

The paper edits the out-projection (`module="attn_out"`); locedit's default is the value projection
(`module="attn_v"`, see QuickFixConfig.module), whose input at a position is that token's own
embedding. Written for the out-projection (the value projection alike, with its own inputs): for key
captions ("a photo of van gogh") and value captions ("a photo of painting") the inputs of
the out-projection at the subject's positions are keys k and the projection's outputs for the
value caption, *without* the bias, are values v = W x_value. The edited weight minimises

    sum_i ||W' k_i - v_i||^2 + lam * ||W' - W||_F^2
    =>  W' = (lam W + V^T K)(lam I + K^T K)^-1          (K: N×d_in rows k_i, V: N×d_out rows v_i)

Preserved concepts add rows (k, W k): their outputs are asked to stay where they are. A caption
corpus adds a covariance term mu * ||(W' - W) C^1/2||^2 with C the second moment of its keys (as
MEMIT/EMCID regularise), which keeps every direction the corpus uses close to the original:

    W' = (V^T K + W R)(K^T K + R)^-1,   R = lam I + mu C

The corpus also supplies key captions: those that name the key (with the value in its place for
the value caption) join the templated ones, and are left out of C.

The released DiffQuickFix notebook adds the bias into v, which the layer then adds a second time;
locedit does not (tests/edit/test_quickfix.py shows the difference).
"""

from __future__ import annotations

import re
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from locedit.edit.cache import (
    VOCAB_SUBFOLDER,
    cache_file,
    cache_folder,
    key_parameters,
    moment_key,
    read_sums,
    vocab_key,
    write_sums,
)
from locedit.edit.edit import Edit
from locedit.edit.targets import fingerprint_tensors, text_target
from locedit.errors import InvalidInputError
from locedit.hooks import Trace
from locedit.models import TextEncoderHandle, detect_family, find_subject_span, text_encoders
from locedit.models.text import SubjectNotFoundError
from locedit.options import is_int, is_number, option, require, require_choice

DEFAULT_TEMPLATES = ("{}", "a photo of {}", "an image of {}", "a picture of {}")
POSITION_MODES = ("subject", "last", "last+after")
# Self-attention projections DIFF-QUICKFIX can edit (TEXT_TEMPLATES kinds): "attn_v" reads one token
# (its embedding, at layer 0); "attn_out" reads the attention's mix of every earlier token (the paper's).
MODULES = ("attn_v", "attn_out")
DEFAULT_POSITIONS = {"attn_v": "subject", "attn_out": "last+after"}
VOCAB_SAMPLES = 16384  # (token, position) pairs of the vocabulary prior (21 per dimension at SD's 768); all when fewer
SYNTHETIC_MAX_WORDS = 24  # longest synthetic caption, in words (the length of a long real prompt)


def read_templates(path: str | Path) -> tuple[str, ...]:
    """Caption templates of a file (--templates): one per line, "{}" marking the concept; blank lines
    and lines starting with # are skipped. Raises FileNotFoundError, or InvalidInputError (check_templates)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"templates file {str(path)!r} does not exist")
    return check_templates(
        line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")
    )


def parse_encoder(text: str | int | None) -> int | None:
    """--encoder: "both" (or "all", None) = every text encoder, else the 0-based encoder index."""
    if text is None or str(text).strip().lower() in ("both", "all"):
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(
            f"--encoder {text!r} is not an encoder: give its 0-based index (0 or 1) or both"
        ) from None


@dataclass
class QuickFixConfig:
    """Hyper-parameters of DIFF-QUICKFIX. Each default is stated here once (the CLI's flags and help
    are built from these fields); the checks run when the config is made."""

    # Ridge strength: how hard W' is pulled back toward W. Units: squared key norm; 0.01 as in
    # the paper's released code, i.e. close to exact least squares on the key rows.
    lam: float = option(0.01, parse=float, help="ridge strength λ: how hard the edited weight is held at the original")
    # Edited projection of the layer's self-attention. "attn_v" (value projection): its input at a
    # position is that token's own embedding (layer 0), so the key rows are the concept's tokens and
    # every later position that attends to them reads the new value; held-out specificity on the
    # built-in model is far higher than with "attn_out" (benchmarks/edit_quality.py, README).
    # "attn_out" (out-projection): the paper's DIFF-QUICKFIX; its input is the attention's mix of
    # every earlier token, so later positions must be edited too (positions "last+after").
    module: str = option(
        "attn_v",
        choices=MODULES,
        help="edited projection of the layer-0 self-attention: attn_v (value projection) or attn_out "
        "(out-projection, the paper's DIFF-QUICKFIX)",
    )
    # Edited token positions, paired by offset from the last subject token with the value caption's.
    # None: "subject" for attn_v (every token of the concept), "last+after" for attn_out (the last
    # subject token and every later position, EOS and padding included, as the paper's released
    # code does); "last": the last subject token only (the paper's single causal state).
    positions: str | None = option(
        None, choices=POSITION_MODES, help="edited token positions", shown="subject for attn_v, last+after for attn_out"
    )
    # Caption templates; "{}" marks the concept. Several templates make the edit generalise.
    templates: tuple[str, ...] = option(
        DEFAULT_TEMPLATES,
        parse=read_templates,
        metavar="FILE",
        help="caption templates file, one per line, '{}' marks the concept",
        shown=f"the {len(DEFAULT_TEMPLATES)} built-in templates",
    )
    # Which text encoder(s) to edit: None = all (both for SDXL), or the 0-based index of one.
    encoder: int | None = option(
        None, parse=parse_encoder, help="text encoder to edit: 0, 1 or both (SDXL)", shown="both"
    )
    # Text-encoder layer whose self-attention is edited (the paper's causal state: 0).
    layer: int = 0
    # dtype of the solve; float64 keeps the normal equations well conditioned.
    solve_dtype: torch.dtype = torch.float64
    # Captions whose keys (every position) should keep their outputs: their second moment C
    # enters the regulariser as mu * C. None: the model folder's locedit_corpus.txt if it has one,
    # else locedit's generic corpus (edit/corpus.txt); captions the tokenizer cannot encode (unknown
    # words, too long) are left out.
    corpus: tuple[str, ...] | None = option(
        None,
        parse=lambda path: tuple(read_corpus(path)),
        metavar="FILE",
        help="captions (one per line) whose outputs the edit keeps in place",
        shown="the model folder's locedit_corpus.txt, else locedit's generic corpus",
    )
    # mu: weight of the corpus term, in "equivalent rows" (C is a mean over positions); 0 turns it off.
    # Chosen on the built-in model's dev split (held-out phrasings; the test split only reports):
    # mu = 10 and 100 scored the same there (1000 lost efficacy), and 10 is the smaller change
    # (||dW||/||W|| about 1 instead of 5). README: what the test split says about 10 vs 100.
    corpus_weight: float = option(10.0, parse=float, help="weight μ of the corpus term; 0 = off")
    # Weight of the vocabulary prior inside the corpus term (attn_v at layer 0 only): the second
    # moment of the v_proj input of every vocabulary token (the key's tokens left out) at every
    # position, added to C. It holds the words no corpus caption wrote ("an", "image" on the
    # built-in model), which a user's prompt will. None: 1.0 for attn_v, 0 (unavailable) for attn_out.
    vocab_weight: float | None = option(
        None,
        parse=float,
        shown="1 for attn_v, 0 for attn_out",
        help="weight of the vocabulary prior in the corpus term (attn_v only; 0 = off)",
    )
    # Key captions mined from the corpus: up to this many corpus captions that name the key concept
    # join the templated ones (the value caption is the same caption with the value in place of the
    # key), so the edit sees the key in the contexts the model reads it in. Captions naming a key
    # are always left out of the corpus term, which would otherwise hold the key's old outputs in
    # place. 0: templates only.
    corpus_keys: int = option(
        64,
        parse=int,
        metavar="N",
        help="corpus captions naming the key that become extra key captions (0 = templates only)",
    )
    # Random compositions of the corpus' words (key words left out) added to the corpus term: they
    # hold the outputs of word orders and combinations the corpus never wrote, which users' prompts
    # will. Number of synthetic captions; 0: the corpus alone.
    synthetic: int = 0
    # Seed of the synthetic captions (the edit is deterministic given it).
    synthetic_seed: int = 0

    def __post_init__(self):
        require(
            self, "lam", is_number(self.lam) and self.lam > 0, "> 0", "it keeps the edit close to the original weight"
        )
        require_choice(self, "module", MODULES)
        if self.positions is not None:
            require_choice(self, "positions", POSITION_MODES)
        self.templates = check_templates(self.templates)
        if isinstance(self.encoder, str):
            self.encoder = parse_encoder(self.encoder)
        require(self, "encoder", self.encoder is None or is_int(self.encoder, 0), "0, 1 (an encoder's index) or both")
        require(self, "layer", is_int(self.layer, 0), "a layer index >= 0")
        if self.corpus is not None:
            self.corpus = tuple(self.corpus)
        require(
            self,
            "corpus_weight",
            is_number(self.corpus_weight) and self.corpus_weight >= 0,
            ">= 0",
            "0 turns the corpus term off",
        )
        require(
            self,
            "corpus",
            self.corpus is None or bool(self.corpus) or self.corpus_weight == 0,
            "a non-empty corpus of captions when corpus_weight > 0",
            "give captions, or corpus_weight=0",
        )
        prior_ok = self.vocab_weight is None or (
            is_number(self.vocab_weight)
            and self.vocab_weight >= 0
            and (self.vocab_weight == 0 or (self.module == "attn_v" and self.layer == 0))
        )
        require(
            self,
            "vocab_weight",
            prior_ok,
            ">= 0, and > 0 only with module attn_v at layer 0",
            "only there is the input one token's embedding",
        )
        require(self, "corpus_keys", is_int(self.corpus_keys, 0), ">= 0", "0 uses the templates only")
        require(self, "synthetic", is_int(self.synthetic, 0), ">= 0", "0 uses the corpus alone")
        require(self, "synthetic_seed", is_int(self.synthetic_seed, 0), "a non-negative integer")

    @property
    def edit_positions(self) -> str:
        """`positions`, or the module's default when None."""
        return self.positions or DEFAULT_POSITIONS[self.module]

    @property
    def prior_weight(self) -> float:
        """`vocab_weight`, or its default when None: 1 for attn_v at layer 0, else 0 (no prior there)."""
        if self.vocab_weight is not None:
            return float(self.vocab_weight)
        return 1.0 if self.module == "attn_v" and self.layer == 0 else 0.0


@dataclass
class Rows:
    """Key and value rows for one encoder: K (N, d_in), V (N, d_out); the first `n_edit` rows are edits."""

    keys: torch.Tensor
    values: torch.Tensor
    n_edit: int
    captions: list[str] = field(default_factory=list)


def normalize_pairs(pairs, allow_empty_value: bool = False) -> list[tuple[str, str]]:
    """Accept a mapping {key: value}, one (key, value) tuple, or a sequence of them. With
    `allow_empty_value` the value may be "" (UCE maps a concept onto the start token then)."""
    if isinstance(pairs, Mapping):
        items = list(pairs.items())
    elif isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(p, str) for p in pairs):
        items = [pairs]
    else:
        items = [tuple(p) for p in pairs]
    if not items:
        raise InvalidInputError(
            "no edit pairs given; pass at least one (key, value) pair, e.g. ('van gogh', 'painting')"
        )
    for item in items:
        if (
            len(item) != 2
            or not all(isinstance(s, str) for s in item)
            or not item[0].strip()
            or not (allow_empty_value or item[1].strip())
        ):
            what = "a non-empty key (the value may be '')" if allow_empty_value else "two non-empty strings"
            raise InvalidInputError(f"edit pair {item!r} is not (key concept, value concept) with {what}")
    return [(k.strip(), v.strip()) for k, v in items]


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    templates = tuple(templates)
    if not templates:
        raise InvalidInputError("no caption templates given; use at least '{}'")
    for t in templates:
        if t.count("{}") != 1:
            raise InvalidInputError(f"template {t!r} must contain '{{}}' exactly once, where the concept goes")
    return templates


def subject_positions(handle: TextEncoderHandle, caption: str, subject: str, mode: str) -> list[int]:
    """Token positions of `subject` in `caption` that the edit uses (see QuickFixConfig.positions)."""
    start, end = find_subject_span(handle.tokenizer, caption, subject)
    if mode == "subject":
        return list(range(start, end))
    if mode == "last":
        return [end - 1]
    if mode == "last+after":
        return list(range(end - 1, handle.context_length))
    raise InvalidInputError(f"unknown positions {mode!r}; use one of {', '.join(POSITION_MODES)}")


def capture_keys(
    handle: TextEncoderHandle, captions: list[str], layer: int = 0, kind: str = "attn_out"
) -> torch.Tensor:
    """Inputs of layer `layer`'s self-attention projection `kind`, (B, context, d_in), stopping the forward there."""
    return capture_ids(handle, handle.tokenize(captions), layer, kind)


@torch.no_grad()
def capture_ids(handle: TextEncoderHandle, ids: torch.Tensor, layer: int = 0, kind: str = "attn_out") -> torch.Tensor:
    """capture_keys for token ids already padded to the context, (B, context)."""
    with Trace(handle.module(kind, layer), retain_input=True, retain_output=False, stop=True) as trace:
        handle.encoder(ids.to(handle.encoder.device))
    return trace.input


# (key caption, key subject, value caption, value subject)
CaptionPair = tuple[str, str, str, str]


def template_captions(pairs: list[tuple[str, str]], templates: Sequence[str]) -> list[CaptionPair]:
    """Every template filled with each pair's key and value."""
    return [(t.format(k), k, t.format(v), v) for k, v in pairs for t in templates]


def _concept_pattern(concept: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(concept)}(?!\w)", re.IGNORECASE)


def names_concept(caption: str, concept: str) -> bool:
    """Whether `caption` names `concept` as whole words (case-insensitive): "Van Gogh's" does, "vangogh" does not."""
    return _concept_pattern(concept).search(caption) is not None


def substitute(caption: str, concept: str, replacement: str) -> str:
    """`caption` with every whole-word occurrence of `concept` (case-insensitive) replaced."""
    return _concept_pattern(concept).sub(lambda _: replacement, caption)


def mine_captions(corpus: Sequence[str], pairs: list[tuple[str, str]], limit: int) -> list[CaptionPair]:
    """Up to `limit` corpus captions per pair that name its key, each with its value caption (every
    occurrence of the key replaced by the value), in corpus order."""
    out: list[CaptionPair] = []
    for key, value in pairs:
        found = [c for c in corpus if names_concept(c, key)][: max(limit, 0)]
        out += [(c, key, substitute(c, key, value), value) for c in found]
    return out


def _usable_pair(handle: TextEncoderHandle, pair: CaptionPair) -> bool:
    """Whether the encoder encodes both captions and finds each subject as tokens in its caption."""
    key_caption, key, value_caption, value = pair
    if not encodable(handle, [value_caption]):
        return False
    try:
        find_subject_span(handle.tokenizer, key_caption, key)
        find_subject_span(handle.tokenizer, value_caption, value)
    except SubjectNotFoundError:
        return False
    return True


def build_rows(
    handle: TextEncoderHandle,
    edit_captions: list[CaptionPair],
    preserve_captions: list[tuple[str, str]],
    positions: str,
    layer: int,
    dtype: torch.dtype,
    kind: str = "attn_out",
) -> Rows:
    """Key/value rows of the ridge problem for one encoder (all captions in one early-exit forward).

    Args:
        edit_captions: (key caption, key subject, value caption, value subject) quadruples.
        preserve_captions: (caption, subject) pairs whose outputs at the subject's positions stay.
    """
    key_caps = [kc for kc, _, _, _ in edit_captions]
    val_caps = [vc for _, _, vc, _ in edit_captions]
    pres_caps = [c for c, _ in preserve_captions]

    # Positions first: a subject missing from its caption fails before any forward runs.
    key_pos = [subject_positions(handle, kc, ks, positions) for kc, ks, _, _ in edit_captions]
    val_pos = [subject_positions(handle, vc, vs, positions) for _, _, vc, vs in edit_captions]
    pres_pos = [subject_positions(handle, c, s, positions) for c, s in preserve_captions]

    x = capture_keys(handle, key_caps + val_caps + pres_caps, layer, kind)  # (B, context, d_in)
    n = len(key_caps)
    # Gather (caption, position) indices first, then convert and project all rows at once.
    key_idx, val_idx = [], []
    for i, (kp, vp) in enumerate(zip(key_pos, val_pos)):
        # pair key and value positions by offset from the last subject token (a longer subject's
        # first tokens are left out: "vincent van gogh" -> "painting" maps "gogh" alone)
        m = min(len(kp), len(vp))
        kp, vp = (kp[len(kp) - m :], vp[len(vp) - m :]) if positions == "subject" else (kp[:m], vp[:m])
        key_idx += [(i, p) for p in kp]
        val_idx += [(n + i, p) for p in vp]
    pres_idx = [(2 * n + i, p) for i, pp in enumerate(pres_pos) for p in pp]

    def gather(idx: list[tuple[int, int]]) -> torch.Tensor:
        if not idx:
            return x.new_zeros((0, x.shape[-1]), dtype=dtype)
        rows, cols = zip(*idx)
        return x[list(rows), list(cols)].to(dtype)

    weight = handle.module(kind, layer).weight.detach().to(dtype)
    edit_keys, preserve_keys = gather(key_idx), gather(pres_idx)
    keys = torch.cat([edit_keys, preserve_keys])
    values = torch.cat([gather(val_idx), preserve_keys]) @ weight.T  # no bias: v = W x
    n_edit = edit_keys.shape[0]
    return Rows(keys, values, n_edit, key_caps + val_caps + pres_caps)


CORPUS_FILE = "locedit_corpus.txt"
GENERIC_CORPUS = Path(__file__).with_name("corpus.txt")


def read_corpus(path: str | Path) -> list[str]:
    """Captions of a corpus file: one per line; blank lines and lines starting with # are skipped."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"corpus file {str(path)!r} does not exist")
    return [line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]


def default_corpus(pipe) -> tuple[list[str], str]:
    """(captions, source): the model folder's locedit_corpus.txt, else locedit's generic corpus."""
    folder = getattr(pipe, "name_or_path", None)
    if folder and (Path(folder) / CORPUS_FILE).is_file():
        return read_corpus(Path(folder) / CORPUS_FILE), str(Path(folder) / CORPUS_FILE)
    return read_corpus(GENERIC_CORPUS), "locedit generic corpus"


def encodable(handle: TextEncoderHandle, captions: Sequence[str]) -> list[str]:
    """The captions this encoder's tokenizer encodes without unknown tokens and within its context."""
    return _encodable_ids(handle, list(captions))[0]


# Corpus key sums by text encoder: {("corpus", kind, layer, captions, weight versions): (usable captions,
# sum of k k^T, positions)}. Keys depend on the token and position embeddings and on the layers up to
# `layer`'s attention, not on the edited projection, so repeated edits of one model reuse the sums; any
# in-place change of those weights changes the key. The sums also persist on disk between processes
# (locedit.edit.cache).
_MOMENTS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()
_VOCAB: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()  # vocabulary priors


def forget_moments() -> None:
    """Drop every in-memory corpus moment, as a fresh process starts (the disk cache stays)."""
    _MOMENTS.clear()
    _VOCAB.clear()


def _weights_version(handle: TextEncoderHandle, layer: int, kind: str = "attn_out") -> tuple:
    """Identity and in-place version of every tensor the inputs of `layer`'s `kind` depend on
    (cache.key_parameters): applying or reverting an edit of that projection keeps the cache."""
    return tuple((t.data_ptr(), t._version) for t in key_parameters(handle, layer, kind).values())


def corpus_moment(
    handle: TextEncoderHandle,
    corpus: Sequence[str],
    layer: int = 0,
    exclude: Sequence[str] = (),
    kind: str = "attn_out",
) -> tuple[torch.Tensor | None, list[str]]:
    """(C, used captions): the second moment of keys over the captions of `corpus` this encoder can
    encode, leaving out those in `exclude`. The whole corpus' sum is cached in memory
    (filtering and the forward pass run once per model, corpus and layer), and on disk between
    processes (locedit.edit.cache); excluded captions are subtracted from it."""
    usable, total, count = _corpus_sums(handle, corpus, layer, kind)
    dropped = set(exclude)
    used = [c for c in usable if c not in dropped]
    if not used:
        return None, used
    if len(used) < len(usable):
        sub_total, sub_count = _key_sums(handle, [c for c in usable if c in dropped], layer, 64, kind)
        total, count = total - sub_total, count - sub_count
    return total / count, used


def usable_corpus(
    handle: TextEncoderHandle, corpus: Sequence[str], layer: int = 0, kind: str = "attn_out"
) -> list[str]:
    """The captions of `corpus` this encoder can encode (cached with the corpus' key sums)."""
    return _corpus_sums(handle, corpus, layer, kind)[0]


def _corpus_sums(
    handle: TextEncoderHandle, corpus: Sequence[str], layer: int, kind: str = "attn_out"
) -> tuple[list[str], torch.Tensor | None, int]:
    """(usable captions, sum of k k^T over them (d_in, d_in) float64, number of positions), from
    memory, else from the disk cache, else by one forward of the usable captions (then stored)."""
    key = ("corpus", kind, layer, tuple(corpus), _weights_version(handle, layer, kind))
    cache = _MOMENTS.setdefault(handle.encoder, {})
    if key not in cache:
        cache.clear()  # one entry per encoder: the latest corpus and weights
        cache[key] = _stored_corpus_sums(handle, list(corpus), layer, kind)
    return cache[key]


def _stored_corpus_sums(
    handle: TextEncoderHandle, corpus: list[str], layer: int, kind: str = "attn_out"
) -> tuple[list[str], torch.Tensor | None, int]:
    """_corpus_sums without the memory: read from the disk cache, or computed and written there."""
    usable, rows = _encodable_ids(handle, corpus)
    if not usable:
        return usable, None, 0
    ids = _pad_ids(handle, rows)
    folder = cache_folder()
    if folder is None:
        return (usable, *_key_sum_ids(handle, ids, layer, 64, kind))
    key = moment_key(handle, layer, usable, ids, kind)
    file = cache_file(folder, key)
    d_in = handle.module(kind, layer).in_features
    stored = read_sums(file, key, d_in, len(usable))
    if stored is not None:
        total, count = stored
        return usable, total.to(handle.encoder.device), count
    total, count = _key_sum_ids(handle, ids, layer, 64, kind)
    write_sums(file, key, total, count, len(usable), layer)
    return usable, total, count


def _encodable_ids(handle: TextEncoderHandle, captions: list[str]) -> tuple[list[str], list[list[int]]]:
    """(the captions `encodable` keeps, their unpadded token ids), tokenizing them in one call."""
    unk = getattr(handle.tokenizer, "unk_token_id", None)
    usable, rows = [], []
    if not captions:
        return usable, rows
    for caption, ids in zip(captions, handle.tokenizer(captions, truncation=False).input_ids):
        # unk may be the end token (CLIP): look between the start and end tokens only
        if len(ids) <= handle.context_length and (unk is None or unk not in ids[1:-1]):
            usable.append(caption)
            rows.append(ids)
    return usable, rows


def _pad_ids(handle: TextEncoderHandle, rows: list[list[int]]) -> torch.Tensor:
    """Token ids padded to the context as TextEncoderHandle.tokenize pads them, (B, context) int64."""
    padded = handle.tokenizer.pad({"input_ids": rows}, padding="max_length", max_length=handle.context_length)
    return torch.tensor(padded["input_ids"], dtype=torch.long)


def _key_sums(
    handle: TextEncoderHandle, captions: Sequence[str], layer: int, batch: int, kind: str = "attn_out"
) -> tuple[torch.Tensor, int]:
    """(sum of k k^T over every position of every caption, float64 (d_in, d_in); number of positions)."""
    return _key_sum_ids(handle, handle.tokenize(list(captions)), layer, batch, kind)


@torch.no_grad()
def _key_sum_ids(
    handle: TextEncoderHandle, ids: torch.Tensor, layer: int, batch: int, kind: str = "attn_out"
) -> tuple[torch.Tensor, int]:
    """_key_sums for padded token ids (B, context), `batch` captions per forward."""
    total, count = None, 0
    for i in range(0, ids.shape[0], batch):
        x = capture_ids(handle, ids[i : i + batch], layer, kind).flatten(0, 1).double()
        total = x.T @ x if total is None else total + x.T @ x
        count += x.shape[0]
    return total, count


def synthetic_captions(corpus: Sequence[str], keys: Sequence[str], n: int, max_words: int, seed: int = 0) -> list[str]:
    """`n` random word sequences over the words of `corpus` (the words of every key left out), of
    2 to `max_words` words, deterministic in `seed`: contexts the corpus never wrote, for its term."""
    if n <= 0:
        return []
    banned = {w for k in keys for w in k.lower().split()}
    words = sorted({w for c in corpus for w in c.lower().split()} - banned)
    if not words:
        return []
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max(3, max_words + 1), (n,), generator=gen).tolist()
    picks = torch.randint(len(words), (sum(lengths),), generator=gen).tolist()
    out, i = [], 0
    for length in lengths:
        out.append(" ".join(words[j] for j in picks[i : i + length]))
        i += length
    return out


def vocab_pairs(handle: TextEncoderHandle, samples: int = VOCAB_SAMPLES, seed: int = 0) -> torch.Tensor:
    """The (token id, position) pairs of the vocabulary prior, (P, 2) int64: every pair of the
    vocabulary and context, or `samples` pairs drawn at random (seeded) when there are more (SD: 49408 × 77)."""
    n_tokens = handle.module("embeddings").token_embedding.weight.shape[0]
    total = n_tokens * handle.context_length
    flat = torch.arange(total)
    if total > samples:  # drawn with replacement: a Monte Carlo mean, without permuting millions of pairs
        flat = torch.randint(total, (samples,), generator=torch.Generator().manual_seed(seed))
    return torch.stack([flat // handle.context_length, flat % handle.context_length], dim=1)


@torch.no_grad()
def vocab_sums(handle: TextEncoderHandle, pairs: torch.Tensor) -> torch.Tensor:
    """Sum of x x^T, float64 (d, d), of the layer-0 v_proj input x = layer_norm1(token + position
    embedding) over (token, position) `pairs` (P, 2); float32 products summed in float64 per chunk."""
    embeddings = handle.module("embeddings")
    norm = handle.module("layer_norm1", 0)
    token = embeddings.token_embedding.weight.detach()
    position = embeddings.position_embedding.weight.detach()
    d = token.shape[1]
    total = torch.zeros(d, d, dtype=torch.float64, device=token.device)
    for chunk in pairs.to(token.device).split(4096):
        x = norm(token[chunk[:, 0]] + position[chunk[:, 1]]).float()
        total += (x.T @ x).double()
    return total


def vocab_moment(
    handle: TextEncoderHandle, exclude_ids: Sequence[int] = (), samples: int = VOCAB_SAMPLES, seed: int = 0
) -> torch.Tensor:
    """Mean x x^T, float64 (d, d), of the layer-0 v_proj input over the vocabulary prior's pairs
    (vocab_pairs) whose token is not in `exclude_ids` (the key's tokens)."""
    pairs = vocab_pairs(handle, samples, seed)
    keep = ~torch.isin(pairs[:, 0], torch.tensor(sorted(set(exclude_ids)), dtype=torch.long))
    return vocab_sums(handle, pairs[keep]) / int(keep.sum())


def _cached_vocab_moment(handle: TextEncoderHandle, exclude_ids: list[int]) -> torch.Tensor:
    """vocab_moment from the sums over every sampled pair, kept in memory per encoder and weights
    and on disk (locedit.edit.cache), minus the pairs of the excluded tokens (a few rows)."""
    key = ("vocab", _weights_version(handle, 0, "attn_v"))
    cache = _VOCAB.setdefault(handle.encoder, {})
    if key not in cache:
        cache.clear()
        cache[key] = _stored_vocab_sums(handle)
    pairs, total = cache[key]
    dropped = torch.isin(pairs[:, 0], torch.tensor(sorted(set(exclude_ids)), dtype=torch.long))
    if dropped.any():
        total = total - vocab_sums(handle, pairs[dropped])
    return total / int((~dropped).sum())


def _stored_vocab_sums(handle: TextEncoderHandle) -> tuple[torch.Tensor, torch.Tensor]:
    """(pairs, sums over them) of the vocabulary prior: read from the disk cache, or computed and written there."""
    pairs = vocab_pairs(handle)
    folder = cache_folder()
    if folder is None:
        return pairs, vocab_sums(handle, pairs)
    key = vocab_key(handle, pairs, VOCAB_SAMPLES, 0)
    file = cache_file(folder, key, VOCAB_SUBFOLDER)
    d = handle.module("attn_v", 0).in_features
    stored = read_sums(file, key, d, 0)
    if stored is not None:
        return pairs, stored[0].to(handle.encoder.device)
    total = vocab_sums(handle, pairs)
    write_sums(file, key, total, pairs.shape[0], 0, 0)
    return pairs, total


def solve_ridge(
    weight: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lam: float, cov: torch.Tensor | None = None
) -> torch.Tensor:
    """argmin_W' ||K W'^T - V||^2 + lam ||W' - W||^2 (+ tr((W'-W) cov (W'-W)^T)) in closed form.

    Args:
        weight: W, (d_out, d_in). keys: K, (N, d_in). values: V, (N, d_out). lam: > 0.
        cov: optional (d_in, d_in) positive semi-definite matrix (mu * C) added to the regulariser.

    Returns:
        W', (d_out, d_in), in the dtype of the inputs. Without cov and N < d_in it solves the N×N
        system W' = W + (V - K W^T)^T (lam I_N + K K^T)^-1 K, else the d_in×d_in one
        W' = (V^T K + W R)(K^T K + R)^-1 with R = lam I + cov.
    """
    if not lam > 0:
        raise InvalidInputError(f"lam must be > 0 (got {lam}); it keeps the edit close to the original weight")
    n, d_in = keys.shape
    if cov is not None:
        reg = lam * torch.eye(d_in, dtype=keys.dtype, device=keys.device) + cov.to(keys.dtype)
        rhs = values.T @ keys + weight @ reg
        return torch.cholesky_solve(rhs.T, torch.linalg.cholesky(keys.T @ keys + reg)).T
    if n < d_in:
        gram = keys @ keys.T + lam * torch.eye(n, dtype=keys.dtype, device=keys.device)
        residual = values - keys @ weight.T  # (N, d_out)
        return weight + residual.T @ torch.cholesky_solve(keys, torch.linalg.cholesky(gram))
    gram = keys.T @ keys + lam * torch.eye(d_in, dtype=keys.dtype, device=keys.device)
    rhs = lam * weight + values.T @ keys  # (d_out, d_in)
    return torch.cholesky_solve(rhs.T, torch.linalg.cholesky(gram)).T  # gram is symmetric positive definite


def quickfix(
    pipe,
    pairs,
    preserve: Sequence[str] = (),
    templates: Sequence[str] | None = None,
    lam: float | None = None,
    positions: str | None = None,
    encoder: int | str | None = None,
    layer: int | None = None,
    corpus: Sequence[str] | None = None,
    corpus_weight: float | None = None,
    corpus_keys: int | None = None,
    module: str | None = None,
    vocab_weight: float | None = None,
    synthetic: int | None = None,
    synthetic_seed: int | None = None,
    config: QuickFixConfig | None = None,
) -> Edit:
    """Compute a DIFF-QUICKFIX edit of `pipe` (which is left untouched: `edit.apply(pipe)` changes it).

    Args:
        pipe: any SD1/SD2/SDXL diffusers pipeline (loaded or built in memory).
        pairs: (key concept, value concept) pairs, e.g. [("van gogh", "painting")], or a dict.
        preserve: concepts whose outputs must stay as they are (neighbours of the key).
        templates, lam, positions, encoder, layer, corpus, corpus_weight, corpus_keys, module,
            vocab_weight, synthetic, synthetic_seed: override the fields of `config` (see
            QuickFixConfig for meaning and defaults).

    Returns:
        An Edit with the before/after tensors, the settings, the base fingerprint and statistics:
        per encoder the number of key rows and the relative error ||W'k - v|| / ||v|| on edit rows.
    """
    cfg = _config(
        config,
        templates=templates,
        lam=lam,
        positions=positions,
        encoder=encoder,
        layer=layer,
        corpus=corpus,
        corpus_weight=corpus_weight,
        corpus_keys=corpus_keys,
        module=module,
        vocab_weight=vocab_weight,
        synthetic=synthetic,
        synthetic_seed=synthetic_seed,
    )
    corpus, corpus_source = _corpus(pipe, cfg)
    pair_list = normalize_pairs(pairs)
    preserve = [c.strip() for c in preserve if c.strip()]
    family = detect_family(pipe)
    _warn_unknown_concepts(pipe, pair_list)

    start = time.perf_counter()
    before, after, stats = {}, {}, {}
    fit: set[str] = set()  # every caption the solve read: key, value, preserve and corpus captions
    for handle in text_encoders(pipe, cfg.encoder):
        target = text_target(cfg.module, handle.name, handle.index, cfg.layer)
        w, w_new, stats[target.name], read = _edit_encoder(
            handle, cfg, pair_list, preserve, corpus, explicit_corpus=cfg.corpus is not None
        )
        before[target.name], after[target.name] = w.to("cpu", copy=True), w_new.to(w.dtype).cpu()
        fit.update(read)
    meta = _meta(cfg, family.name, pair_list, preserve, corpus_source if corpus else None, before, stats)
    return Edit(
        before=before, after=after, meta=meta | {"seconds": time.perf_counter() - start, "fit_captions": sorted(fit)}
    )


# Python types of quickfix()'s keyword overrides (the CLI hands QuickFixConfig parsed values).
_OVERRIDE_TYPES = {
    "lam": float,
    "layer": int,
    "corpus": list,
    "corpus_weight": float,
    "corpus_keys": int,
    "vocab_weight": float,
    "synthetic": int,
    "synthetic_seed": int,
}


def _config(config: QuickFixConfig | None, **overrides) -> QuickFixConfig:
    """`config` (or the defaults) with the given overrides, checked by QuickFixConfig itself."""
    given = {k: _OVERRIDE_TYPES.get(k, lambda v: v)(v) for k, v in overrides.items() if v is not None and v != ""}
    return replace(config or QuickFixConfig(), **given)


def _corpus(pipe, cfg: QuickFixConfig) -> tuple[list[str], str | None]:
    """(captions, source) of the corpus: the given one, else the model's default when the corpus term
    or mined key captions need one, else none."""
    if cfg.corpus is not None:
        return list(cfg.corpus), "given"
    if cfg.corpus_weight > 0 or cfg.corpus_keys > 0:
        return default_corpus(pipe)
    return [], None


def _warn_unknown_concepts(pipe, pairs: list[tuple[str, str]]) -> None:
    """UnknownConceptWarning for every key or value no caption of the model's corpus names."""
    from locedit.edit.concepts import UnknownConceptWarning, check_concepts, model_corpus  # imports quickfix

    for problem in check_concepts(pipe, pairs, model_corpus(pipe)):
        warnings.warn(f"{problem}; the edit is computed anyway", UnknownConceptWarning, stacklevel=3)


def _edit_encoder(
    handle: TextEncoderHandle,
    cfg: QuickFixConfig,
    pairs: list[tuple[str, str]],
    preserve: list[str],
    corpus: list[str],
    explicit_corpus: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict, set[str]]:
    """The solve for one text encoder: (W, W' in the solve dtype, statistics, every caption read)."""
    if not 0 <= cfg.layer < handle.num_layers:
        raise InvalidInputError(f"layer {cfg.layer} does not exist in {handle.name} ({handle.num_layers} layers)")
    usable = usable_corpus(handle, corpus, cfg.layer, cfg.module) if corpus else []
    if cfg.corpus_weight > 0 and explicit_corpus and not usable:
        raise InvalidInputError(f"no caption of the corpus can be encoded by {handle.name} (unknown words or too long)")
    # corpus captions that name a key: edit rows (when mined), never in the corpus term
    naming = [c for c in usable if any(names_concept(c, k) for k, _ in pairs)]
    rows, mined = _edit_rows(handle, cfg, pairs, preserve, naming)
    w = handle.module(cfg.module, cfg.layer).weight.detach()
    cov, used = _corpus_term(handle, cfg, pairs, corpus, usable, naming)
    w_new = solve_ridge(w.to(cfg.solve_dtype), rows.keys, rows.values, cfg.lam, cov)
    edit_k, edit_v = rows.keys[: rows.n_edit], rows.values[: rows.n_edit]
    err = (edit_k @ w_new.T - edit_v).norm(dim=1) / edit_v.norm(dim=1).clamp_min(1e-12)
    stats = {
        "key_rows": rows.n_edit,
        "corpus_captions": len(used),
        "mined_captions": len(mined),
        "preserve_rows": int(rows.keys.shape[0] - rows.n_edit),
        "rel_error_mean": float(err.mean()),
        "rel_error_max": float(err.max()),
    }
    return w, w_new, stats, set(rows.captions) | set(used)


def _edit_rows(
    handle: TextEncoderHandle, cfg: QuickFixConfig, pairs: list[tuple[str, str]], preserve: list[str], naming: list[str]
) -> tuple[Rows, list[CaptionPair]]:
    """(key/value rows, mined caption pairs): templated and mined key captions, and the preserved
    concepts in the templates and in the mined contexts."""
    mined = [m for m in mine_captions(naming, pairs, cfg.corpus_keys) if _usable_pair(handle, m)]
    edit_captions = template_captions(pairs, cfg.templates) + mined
    preserve_captions = [(t.format(c), c) for c in preserve for t in cfg.templates]
    preserve_captions += [(substitute(kc, k, c), c) for kc, k, _, _ in mined for c in preserve]
    rows = build_rows(
        handle, edit_captions, preserve_captions, cfg.edit_positions, cfg.layer, cfg.solve_dtype, cfg.module
    )
    return rows, mined


def _corpus_term(
    handle: TextEncoderHandle,
    cfg: QuickFixConfig,
    pairs: list[tuple[str, str]],
    corpus: list[str],
    usable: list[str],
    naming: list[str],
) -> tuple[torch.Tensor | None, list[str]]:
    """(mu * C in the solve dtype or None, corpus captions used): the second moment of the corpus'
    keys (captions naming a key left out) plus synthetic captions, and the vocabulary prior."""
    if not cfg.corpus_weight > 0:
        return None, []
    max_words = min(handle.context_length - 2, SYNTHETIC_MAX_WORDS)
    held = corpus + synthetic_captions(usable, [k for k, _ in pairs], cfg.synthetic, max_words, cfg.synthetic_seed)
    moment, used = corpus_moment(handle, held, cfg.layer, exclude=naming, kind=cfg.module)
    if cfg.prior_weight > 0:
        key_ids = {i for k, _ in pairs for i in handle.tokenizer(k, add_special_tokens=False).input_ids}
        prior = cfg.prior_weight * _cached_vocab_moment(handle, sorted(key_ids))
        moment = prior if moment is None else moment + prior
    return (cfg.corpus_weight * moment.to(cfg.solve_dtype) if moment is not None else None), used


def _meta(
    cfg: QuickFixConfig,
    family: str,
    pairs: list[tuple[str, str]],
    preserve: list[str],
    corpus_source: str | None,
    before: dict[str, torch.Tensor],
    stats: dict,
) -> dict:
    """The edit's metadata: method, family, pairs, every setting as used, fingerprint and statistics."""
    return {
        "method": "diff-quickfix",
        "family": family,
        "pairs": [list(p) for p in pairs],
        "preserve": preserve,
        "templates": list(cfg.templates),
        "lam": cfg.lam,
        "corpus_source": corpus_source,
        "corpus_weight": cfg.corpus_weight,
        "corpus_keys": cfg.corpus_keys,
        "module": cfg.module,
        "vocab_weight": cfg.prior_weight if cfg.corpus_weight > 0 else 0.0,  # the prior lives inside the corpus term
        "synthetic": cfg.synthetic,
        "synthetic_seed": cfg.synthetic_seed,
        "positions": cfg.edit_positions,
        "layer": cfg.layer,
        "encoder": "both" if cfg.encoder is None else str(cfg.encoder),
        "solve_dtype": str(cfg.solve_dtype).removeprefix("torch."),
        "fingerprint": fingerprint_tensors(before),
        "stats": stats,
    }
