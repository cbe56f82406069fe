"""Disk cache of corpus key sums, so that a fresh process edits a model as fast as a warm one.

DIFF-QUICKFIX's corpus term needs the sum of k k^T over every position of every corpus caption
(float64, d_in × d_in): one forward of the whole corpus up to the edited layer, 0.5-0.7 s at SD-1.5
size on a CPU. quickfix keeps it in memory for repeated edits in one process; this module keeps it
on disk for the next process, one safetensors file per (model weights, corpus, layer):

    <cache folder>/corpus-moments/<key>.safetensors   tensor "sum"; metadata: count, captions, key

The key is a sha256 (`moment_key`) of everything the sum depends on and nothing else: the token ids
of the usable captions (so the corpus and the tokenizer), the token-embedding rows at those ids,
the position embedding, the layers before the edited one and the edited layer up to its
out_proj's input, the encoder's shape settings, the dtype, the device type and the torch and
transformers versions. The edited out_proj itself (and everything after it) does not enter, so
edits of that weight keep their cache entry, and hashing stays cheap (about 8 MB at SD-1.5 size
for layer 0, a few ms).

Files are written atomically; a file that cannot be read or does not match (truncated, corrupt,
another format) counts as absent and is rewritten. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch

from locedit.io import atomic_path
from locedit.models import TextEncoderHandle
from locedit.models.families import resolve_text_module, text_template
from locedit.options import option, require

FORMAT = "locedit-corpus-moment/1"
SUBFOLDER = "corpus-moments"
VOCAB_SUBFOLDER = "vocab-moments"  # the vocabulary prior's sums (quickfix.vocab_sums), same file format
# Modules of a CLIP encoder layer whose weights do not change the inputs of the edited projection:
# those after the out_proj input (attn_out), or after layer_norm1 (attn_v: v_proj reads layer_norm1).
_NOT_READ = {
    "attn_out": ("self_attn.out_proj.", "layer_norm2.", "mlp."),
    "attn_v": ("self_attn.", "layer_norm2.", "mlp."),
}


@dataclass
class CacheSettings:
    """Whether and where corpus key sums persist between processes (see cache_folder)."""

    # False: every process computes the sums itself (repeated edits in one process still reuse
    # them from memory). LOCEDIT_NO_CACHE=1 turns it off too.
    enabled: bool = option(
        True,
        flag="--no-cache",
        action="flag",
        help="neither read nor write the corpus moment cache ($LOCEDIT_CACHE, else ~/.cache/locedit)",
    )
    # Cache folder; None: $LOCEDIT_CACHE if set, else $XDG_CACHE_HOME/locedit, else ~/.cache/locedit.
    folder: str | Path | None = None

    def __post_init__(self):
        require(self, "enabled", isinstance(self.enabled, bool), "True or False")
        require(self, "folder", self.folder is None or isinstance(self.folder, (str, Path)), "a folder path or None")


SETTINGS = CacheSettings()


def cache_folder() -> Path | None:
    """The folder corpus moments are read from and written to, or None when the disk cache is off."""
    if not SETTINGS.enabled or os.environ.get("LOCEDIT_NO_CACHE", "").strip() not in ("", "0"):
        return None
    if SETTINGS.folder is not None:
        return Path(SETTINGS.folder).expanduser()
    if os.environ.get("LOCEDIT_CACHE"):
        return Path(os.environ["LOCEDIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "locedit"


@contextmanager
def disk_cache(enabled: bool):
    """Turn the disk cache on or off inside a `with` block (the CLI's --no-cache)."""
    previous = SETTINGS.enabled
    SETTINGS.enabled = enabled
    try:
        yield
    finally:
        SETTINGS.enabled = previous


def key_parameters(handle: TextEncoderHandle, layer: int, kind: str = "attn_out") -> dict[str, torch.Tensor]:
    """The tensors the inputs of `layer`'s projection `kind` depend on, by name: every parameter and
    buffer of the embeddings and of the layers before `layer`, and those of `layer` before the projection."""
    embeddings = resolve_text_module(handle.encoder, text_template("token_embedding").rpartition(".")[0])
    out = {f"embeddings.{n}": t for n, t in chain(embeddings.named_parameters(), embeddings.named_buffers())}
    for i in range(layer + 1):
        module = handle.module("layer", i)
        for n, t in chain(module.named_parameters(), module.named_buffers()):
            if i < layer or not n.startswith(_NOT_READ[kind]):
                out[f"layers.{i}.{n}"] = t
    return out


def _digest(h: hashlib._Hash, name: str, tensor: torch.Tensor) -> None:
    """Feed name, dtype, shape and the raw bytes of `tensor` into `h` (no float conversion: the
    sums of a float16 model differ from those of its float32 original)."""
    t = tensor.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def moment_key(
    handle: TextEncoderHandle, layer: int, captions: list[str], ids: torch.Tensor, kind: str = "attn_out"
) -> str:
    """sha256 (hex) of everything the corpus key sums depend on (see the module docstring).

    Args:
        captions: the usable corpus captions, in order (the sum's float rounding follows it).
        ids: their padded token ids, (len(captions), context_length), as the forward takes them.
    """
    import transformers

    config = handle.encoder.config
    token_embedding = handle.module("token_embedding").weight
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": FORMAT,
                "layer": layer,
                "module": kind,
                "class": type(handle.encoder).__name__,
                "config": {
                    k: getattr(config, k, None)
                    for k in (
                        "hidden_size",
                        "num_attention_heads",
                        "layer_norm_eps",
                        "hidden_act",
                        "max_position_embeddings",
                    )
                },
                "attention": getattr(config, "_attn_implementation", None),
                "device": token_embedding.device.type,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "captions": hashlib.sha256("\n".join(captions).encode()).hexdigest(),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    _digest(h, "ids", ids.to(torch.int64))
    rows = torch.unique(ids).to(token_embedding.device)
    for name, tensor in sorted(key_parameters(handle, layer, kind).items()):
        if tensor is token_embedding:  # only the rows the corpus uses enter the sums
            _digest(h, f"{name}[ids]", token_embedding[rows])
        else:
            _digest(h, name, tensor)
    return h.hexdigest()


def vocab_key(handle: TextEncoderHandle, pairs: torch.Tensor, samples: int, seed: int) -> str:
    """sha256 (hex) of everything the vocabulary prior's sums over `pairs` (P, 2) depend on: the
    token-embedding rows they use (not the whole table: hashing SD's 150 MB would cost more than the
    sums), the position embedding, layer 0's layer_norm1, the context length and the sample."""
    import transformers

    embeddings = handle.module("embeddings")
    norm = handle.module("layer_norm1", 0)
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": FORMAT,
                "kind": "vocab",
                "samples": samples,
                "seed": seed,
                "context": handle.context_length,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "device": embeddings.token_embedding.weight.device.type,
            },
            sort_keys=True,
        ).encode()
    )
    rows = torch.unique(pairs[:, 0]).to(embeddings.token_embedding.weight.device)
    _digest(h, "pairs", pairs.to(torch.int64))
    _digest(h, "token_embedding[rows]", embeddings.token_embedding.weight[rows])
    _digest(h, "position_embedding", embeddings.position_embedding.weight)
    for name, tensor in sorted(norm.state_dict().items()):
        _digest(h, f"layer_norm1.{name}", tensor)
    return h.hexdigest()


def cache_file(folder: Path, key: str, subfolder: str = SUBFOLDER) -> Path:
    return folder / subfolder / f"{key}.safetensors"


def read_sums(file: Path, key: str, d_in: int, captions: int) -> tuple[torch.Tensor, int] | None:
    """(sum of k k^T (d_in, d_in) float64 on the CPU, number of positions) from `file`, or None when
    the file is absent or does not hold exactly that entry (truncated, corrupt, other key or shape)."""
    if not file.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            total = f.get_tensor("sum")
        count = int(meta["count"])
        ok = (
            meta.get("format") == FORMAT
            and meta.get("key") == key
            and int(meta["captions"]) == captions
            and count > 0
            and total.dtype == torch.float64
            and tuple(total.shape) == (d_in, d_in)
        )
    except Exception:  # any unreadable file is a miss: the sums are recomputed and the file rewritten
        return None
    return (total, count) if ok else None


def write_sums(file: Path, key: str, total: torch.Tensor, count: int, captions: int, layer: int) -> None:
    """Write the sums atomically; a cache that cannot be written only costs speed (a warning says why)."""
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "key": key, "count": str(count), "captions": str(captions), "layer": str(layer)}
    try:
        with atomic_path(file) as tmp:
            save_file({"sum": total.detach().to("cpu", torch.float64).contiguous()}, str(tmp), metadata=meta)
    except OSError as err:
        warnings.warn(
            f"could not write the corpus moment cache {file}: {err}; set LOCEDIT_CACHE to a writable "
            "folder, or turn the cache off (--no-cache, LOCEDIT_NO_CACHE=1)",
            stacklevel=3,
        )
