"""Disk cache of corpus key sums: a fresh process reads it instead of a corpus forward, bitwise equal
to computing it; changed weights, corpus or layer miss; corrupt files are recomputed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from locedit import quickfix
from locedit.cli import main
from locedit.edit import cache
from locedit.models import text_encoders

qf = importlib.import_module("locedit.edit.quickfix")  # the module (locedit.edit.quickfix is the function)
PAIR = [("van gogh", "painting")]
CORPUS = ["a photo of a cat", "a red car on a road", "a bowl of fruit", "a portrait of a woman", "a dog by van gogh"]


@pytest.fixture
def corpus_forwards(monkeypatch) -> list[int]:
    """Number of captions in each whole-corpus forward (the one the cache saves), one entry per forward."""
    calls: list[int] = []
    compute = qf._key_sum_ids

    def counted(handle, ids, layer, batch, kind="attn_out"):
        calls.append(int(ids.shape[0]))
        return compute(handle, ids, layer, batch, kind)

    monkeypatch.setattr(qf, "_key_sum_ids", counted)
    monkeypatch.setattr(
        qf, "_key_sums", lambda h, c, layer, batch, kind="attn_out": compute(h, h.tokenize(list(c)), layer, batch, kind)
    )
    return calls


def files(folder: Path) -> list[Path]:
    return sorted((folder / cache.SUBFOLDER).glob("*.safetensors"))


def same(a, b) -> bool:
    return a.names == b.names and all(torch.equal(a.after[n], b.after[n]) for n in a.names)


def test_fresh_process_reads_the_disk_cache_bitwise(load_tiny, locedit_cache, corpus_forwards):
    first = quickfix(load_tiny("sd1"), PAIR, corpus=CORPUS)
    assert corpus_forwards == [len(CORPUS)] and len(files(locedit_cache)) == 1
    qf.forget_moments()  # as a new process: nothing in memory
    second = quickfix(load_tiny("sd1"), PAIR, corpus=CORPUS)
    assert corpus_forwards == [len(CORPUS)]  # no corpus forward: the file was read
    with cache.disk_cache(False):
        qf.forget_moments()
        uncached = quickfix(load_tiny("sd1"), PAIR, corpus=CORPUS)
    assert corpus_forwards == [len(CORPUS)] * 2 and len(files(locedit_cache)) == 1
    assert same(first, second) and same(first, uncached)
    # the default corpus and SDXL's two encoders: one file per encoder, read back bitwise
    sdxl = quickfix(load_tiny("sdxl"), PAIR)
    assert len(files(locedit_cache)) == 3
    qf.forget_moments()
    n = len(corpus_forwards)
    assert same(quickfix(load_tiny("sdxl"), PAIR), sdxl) and len(corpus_forwards) == n


def test_changed_weights_corpus_or_layer_miss(load_tiny, locedit_cache, corpus_forwards):
    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]

    def edit_fresh(corpus=CORPUS, **kwargs):
        qf.forget_moments()
        return quickfix(pipe, PAIR, corpus=corpus, module="attn_out", **kwargs)

    edit_fresh()
    assert len(corpus_forwards) == 1
    with torch.no_grad():  # weights after the keys: the edited out_proj, the MLP, later layers
        handle.module("attn_out", 0).weight.mul_(2.0)
        handle.module("mlp", 0).fc1.weight.add_(0.1)
        handle.module("layer", 1).self_attn.q_proj.weight.add_(0.1)
    edit_fresh()
    assert len(corpus_forwards) == 1 and len(files(locedit_cache)) == 1
    with torch.no_grad():  # weights the keys depend on
        handle.module("layer", 0).self_attn.k_proj.weight.add_(0.01)
    edit_fresh()
    assert len(corpus_forwards) == 2 and len(files(locedit_cache)) == 2
    with torch.no_grad():
        handle.module("token_embedding").weight[handle.tokenizer("cat").input_ids[1]] += 0.01  # a row the corpus uses
    edit_fresh()
    assert len(corpus_forwards) == 3 and len(files(locedit_cache)) == 3
    edit_fresh(corpus=CORPUS[:-1] + ["a dog by monet"])  # another corpus
    assert len(corpus_forwards) == 4 and len(files(locedit_cache)) == 4
    edit_fresh(layer=1)  # another layer
    assert len(corpus_forwards) == 5 and len(files(locedit_cache)) == 5


def test_value_projection_inputs_follow_only_the_weights_before_it(load_tiny, locedit_cache, corpus_forwards):
    """v_proj reads layer_norm1's output: its own (edited) weight and q/k/out do not change its inputs."""
    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]

    def edit_fresh():
        qf.forget_moments()
        return quickfix(pipe, PAIR, corpus=CORPUS)

    edit_fresh()
    assert len(corpus_forwards) == 1
    with torch.no_grad():
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            getattr(handle.module("layer", 0).self_attn, proj).weight.add_(0.1)
    edit_fresh()
    assert len(corpus_forwards) == 1
    with torch.no_grad():
        handle.module("layer_norm1", 0).weight.add_(0.1)
    edit_fresh()
    assert len(corpus_forwards) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other key"])
def test_corrupt_cache_file_is_recomputed_and_rewritten(damage, load_tiny, locedit_cache, corpus_forwards):
    first = quickfix(load_tiny("sd1"), PAIR, corpus=CORPUS)
    (file,) = files(locedit_cache)
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    elif damage == "garbage":
        file.write_bytes(b"\x00" * 64)
    else:  # a valid safetensors file whose metadata names another entry
        from safetensors.torch import save_file

        save_file(
            {"sum": torch.zeros(4, 4, dtype=torch.float64)}, str(file), metadata={"format": cache.FORMAT, "key": "x"}
        )
    qf.forget_moments()
    again = quickfix(load_tiny("sd1"), PAIR, corpus=CORPUS)
    assert len(corpus_forwards) == 2 and same(first, again)
    qf.forget_moments()
    quickfix(load_tiny("sd1"), PAIR, corpus=CORPUS)
    assert len(corpus_forwards) == 2  # the rewritten file is read


def test_cache_folder_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCEDIT_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_folder() == tmp_path / "a"
    monkeypatch.delenv("LOCEDIT_CACHE")
    assert cache.cache_folder() == tmp_path / "xdg" / "locedit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_folder() == Path.home() / ".cache" / "locedit"
    monkeypatch.setenv("LOCEDIT_NO_CACHE", "1")
    assert cache.cache_folder() is None
    monkeypatch.delenv("LOCEDIT_NO_CACHE")
    with cache.disk_cache(False):
        assert cache.cache_folder() is None
    assert cache.cache_folder() is not None


def test_cli_no_cache_writes_no_cache_file(tiny_dirs, locedit_cache, capsys):
    model = str(tiny_dirs["sd1"])
    assert main(["edit", model, "--remove", "van gogh", "--to", "painting", "--no-cache"]) == 0
    assert files(locedit_cache) == []
    assert main(["edit", model, "--remove", "van gogh", "--to", "painting"]) == 0
    assert len(files(locedit_cache)) == 1
