"""DIFF-QUICKFIX: the closed form is the ridge optimum, keys are captured exactly, spans and errors."""

from __future__ import annotations

import pytest
import torch

from locedit import quickfix
from locedit.edit.quickfix import build_rows, capture_keys, normalize_pairs, solve_ridge, template_captions
from locedit.hooks import Trace
from locedit.models import find_subject_span, text_encoders
from locedit.models.text import CaptionTooLongError, SubjectNotFoundError

TEMPLATES = ("{}", "a photo of {}", "an image of {}", "a picture of {}")


def ridge_rows(handle, positions, preserve=("monet",)):
    edit_captions = template_captions(normalize_pairs([("van gogh", "painting")]), TEMPLATES)
    preserve_captions = [(t.format(c), c) for c in preserve for t in TEMPLATES]
    return build_rows(handle, edit_captions, preserve_captions, positions, 0, torch.float64)


def objective_gradient(w_new, w, keys, values, lam):
    """d/dW' of sum ||W'k - v||^2 + lam ||W' - W||^2, halved."""
    return (keys @ w_new.T - values).T @ keys + lam * (w_new - w)


@pytest.mark.parametrize("positions", ["last", "last+after"])  # N < d and N > d branches of the solve
def test_closed_form_is_ridge_optimum(load_tiny, positions):
    handle = text_encoders(load_tiny("sd1"))[0]
    rows = ridge_rows(handle, positions)
    w = handle.module("attn_out", 0).weight.detach().double()
    d_in = w.shape[1]
    assert (rows.keys.shape[0] < d_in) == (positions == "last")
    lam = 0.01
    w_new = solve_ridge(w, rows.keys, rows.values, lam)
    grad = objective_gradient(w_new, w, rows.keys, rows.values, lam)
    scale = (rows.values.T @ rows.keys).norm() + lam * w.norm()
    rel = (grad.norm() / scale).item()
    print(f"relative gradient at the closed form ({positions}): {rel:.2e}")
    assert rel < 1e-8


def test_covariance_regularised_form_is_its_optimum(load_tiny):
    from locedit.edit.quickfix import corpus_moment

    handle = text_encoders(load_tiny("sd1"))[0]
    rows = ridge_rows(handle, "last+after")
    w = handle.module("attn_out", 0).weight.detach().double()
    cov = 5.0 * corpus_moment(handle, ["a photo of a cat", "a red car", "monet"])[0]
    lam = 0.01
    w_new = solve_ridge(w, rows.keys, rows.values, lam, cov)
    grad = objective_gradient(w_new, w, rows.keys, rows.values, lam) + (w_new - w) @ cov
    rel = (grad.norm() / ((rows.values.T @ rows.keys).norm() + (w @ cov).norm())).item()
    assert rel < 1e-8
    # the corpus term holds the corpus' outputs closer to where they were
    plain = solve_ridge(w, rows.keys, rows.values, lam)
    drift = lambda w2: torch.trace((w2 - w) @ cov @ (w2 - w).T).item()  # noqa: E731
    assert drift(w_new) < drift(plain)


def test_closed_form_equals_gradient_descent(load_tiny):
    handle = text_encoders(load_tiny("sd1"))[0]
    rows = ridge_rows(handle, "last")
    w = handle.module("attn_out", 0).weight.detach().double()
    lam = 1.0
    closed = solve_ridge(w, rows.keys, rows.values, lam)
    # Plain gradient descent from W with step 1/L (L = largest eigenvalue of K^T K + lam I).
    lipschitz = torch.linalg.eigvalsh(rows.keys.T @ rows.keys).max().item() + lam
    w_gd = w.clone()
    for _ in range(20000):
        grad = objective_gradient(w_gd, w, rows.keys, rows.values, lam)
        w_gd -= grad / lipschitz
        if grad.norm() < 1e-12:
            break
    rel = ((w_gd - closed).norm() / (closed - w).norm()).item()
    print(f"gradient descent vs closed form: relative difference of the update {rel:.2e}")
    assert rel < 1e-6


def test_early_exit_keys_equal_full_forward_bitwise(load_tiny):
    handle = text_encoders(load_tiny("sd1"))[0]
    captions = ["a photo of van gogh", "painting", "an image of a red car on a road"]
    early = capture_keys(handle, captions)
    with torch.no_grad(), Trace(handle.module("attn_out", 0), retain_input=True) as trace:
        out = handle.encoder(handle.tokenize(captions))
    assert out[0].shape[1] == handle.context_length  # the whole forward ran
    assert torch.equal(early, trace.input)


def test_subject_span_mid_caption_and_multi_token(load_tiny):
    tok = text_encoders(load_tiny("sd1"))[0].tokenizer
    caption = "a painting of van gogh in a wheat field"
    start, end = find_subject_span(tok, caption, "Van Gogh")
    ids = tok(caption).input_ids
    assert tok.convert_ids_to_tokens(ids[start:end]) == ["van</w>", "gogh</w>"]
    assert (start, end) == (4, 6)  # <|startoftext|> a painting of | van gogh | in ...
    assert end < len(ids) - 1  # not the token before EOS


def test_subject_not_found_is_a_clear_error(load_tiny):
    pipe = load_tiny("sd1")
    with pytest.raises(SubjectNotFoundError, match="does not occur"):
        find_subject_span(pipe.tokenizer, "a photo of a cat", "van gogh")
    with pytest.raises(SubjectNotFoundError, match="van gogh"):  # "goghs" tokenizes differently
        quickfix(pipe, [("van gogh", "painting")], templates=["paintings by {}s"])


def test_caption_longer_than_context_is_a_clear_error(load_tiny):
    pipe = load_tiny("sd1")
    long_template = " ".join(["very"] * 80) + " {}"
    with pytest.raises(CaptionTooLongError, match="context is 77"):
        quickfix(pipe, [("van gogh", "painting")], templates=[long_template])


def test_bad_settings_are_refused(load_tiny):
    pipe = load_tiny("sd1")
    with pytest.raises(ValueError, match="exactly once"):
        quickfix(pipe, [("van gogh", "painting")], templates=["a photo"])
    with pytest.raises(ValueError, match="lam must be > 0"):
        quickfix(pipe, [("van gogh", "painting")], lam=0)
    with pytest.raises(ValueError, match="unknown positions"):
        quickfix(pipe, [("van gogh", "painting")], positions="first")
    with pytest.raises(ValueError, match="no edit pairs"):
        quickfix(pipe, [])
    with pytest.raises(ValueError, match="unknown module"):
        quickfix(pipe, [("van gogh", "painting")], module="attn_q")
    with pytest.raises(ValueError, match="vocab_weight"):
        quickfix(pipe, [("van gogh", "painting")], module="attn_out", vocab_weight=1.0)
    with pytest.raises(ValueError, match="vocab_weight"):
        quickfix(pipe, [("van gogh", "painting")], vocab_weight=-1.0)


def attn_out_at(handle, captions, positions_of):
    """Layer-0 self-attention output (with bias) of each caption at its edited positions."""
    with torch.no_grad(), Trace(handle.module("attn_out", 0), stop=True) as trace:
        handle.encoder(handle.tokenize(captions))
    return [trace.output[i, positions_of(i)] for i in range(len(captions))]


def test_edited_outputs_match_value_and_preserved_concepts_move_less(load_tiny):
    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]
    keys = [t.format("van gogh") for t in TEMPLATES]
    values = [t.format("painting") for t in TEMPLATES]
    kept = [t.format("monet") for t in TEMPLATES]
    last = lambda caps, subj: lambda i: [find_subject_span(handle.tokenizer, caps[i], subj)[1] - 1]  # noqa: E731

    def monet_shift(edit):
        base = attn_out_at(handle, kept, last(kept, "monet"))
        edit.apply(pipe)
        moved = attn_out_at(handle, kept, last(kept, "monet"))
        edited = attn_out_at(handle, keys, last(keys, "van gogh"))
        edit.revert(pipe)
        return sum((a - b).norm() / b.norm() for a, b in zip(moved, base)).item() / len(kept), edited

    target = attn_out_at(handle, values, last(values, "painting"))
    # the pure ridge problem (no covariance term): the key rows are fitted almost exactly
    plain_shift, edited = monet_shift(
        quickfix(pipe, [("van gogh", "painting")], module="attn_out", positions="last", lam=1e-4, corpus_weight=0)
    )
    rel = max(((e - t).norm() / t.norm()).item() for e, t in zip(edited, target))
    print(f"key captions' layer-0 output vs value captions' at the last subject token: max relative error {rel:.2e}")
    assert rel < 1e-2
    kept_shift, _ = monet_shift(
        quickfix(
            pipe,
            [("van gogh", "painting")],
            module="attn_out",
            positions="last",
            lam=1e-4,
            preserve=["monet"],
            corpus_weight=0,
        )
    )
    print(f"'monet' output shift: unpreserved {plain_shift:.3e}, preserved {kept_shift:.3e}")
    assert kept_shift < plain_shift


def test_values_exclude_the_bias(load_tiny):
    """The released notebook puts the bias into v; the layer then adds it a second time."""
    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]
    layer = handle.module("attn_out", 0)
    with torch.no_grad():
        layer.bias.normal_(0.0, 0.5)  # random-init CLIP biases are zero; make the difference visible
    rows = ridge_rows(handle, "last", preserve=())
    w = layer.weight.detach().double()
    b = layer.bias.detach().double()
    ours = solve_ridge(w, rows.keys, rows.values, 1e-4)
    notebook = solve_ridge(w, rows.keys, rows.values + b, 1e-4)  # v = W x + b
    target = rows.values + b  # what the value caption's layer output actually is
    err_ours = ((rows.keys @ ours.T + b - target).norm() / target.norm()).item()
    err_notebook = ((rows.keys @ notebook.T + b - target).norm() / target.norm()).item()
    print(f"layer output error vs value caption: locedit {err_ours:.2e}, bias-in-v variant {err_notebook:.2e}")
    assert err_ours < 1e-2 < err_notebook


def test_many_pairs_and_preserved_concepts_in_one_solve(load_tiny):
    pipe = load_tiny("sd1")
    pairs = {"van gogh": "painting", "mickey mouse": "mouse", "eiffel tower": "tower"}
    edit = quickfix(pipe, pairs, preserve=["monet", "cat", "paris"], module="attn_out", positions="last")
    stats = edit.meta["stats"]["text_encoder.text_model.encoder.layers.0.self_attn.out_proj.weight"]
    assert stats["key_rows"] == 3 * len(TEMPLATES)
    assert stats["preserve_rows"] == 3 * len(TEMPLATES)
    assert edit.meta["pairs"] == [list(p) for p in pairs.items()]


def test_quickfix_leaves_the_pipeline_untouched(load_tiny):
    pipe = load_tiny("sd1")
    before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    quickfix(pipe, [("van gogh", "painting")])
    assert all(torch.equal(before[k], v) for k, v in pipe.text_encoder.state_dict().items())


def test_in_memory_pipeline(tokenizer_files):
    from locedit.models.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd2", tokenizer_files)
    edit = quickfix(pipe, [("van gogh", "painting")])
    assert edit.meta["family"] == "sd2"


def test_default_corpus_keeps_corpus_captions_in_place(load_tiny, tiny_dirs, tmp_path):
    from locedit.edit.quickfix import CORPUS_FILE, GENERIC_CORPUS, default_corpus, read_corpus

    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]
    captions, source = default_corpus(pipe)
    assert source == "locedit generic corpus" and captions == read_corpus(GENERIC_CORPUS) and len(captions) >= 100
    with_cov = quickfix(pipe, [("van gogh", "painting")], module="attn_out")  # the covariance term on by default
    without = quickfix(pipe, [("van gogh", "painting")], module="attn_out", corpus_weight=0)
    assert with_cov.meta["corpus_source"] == "locedit generic corpus"
    keys = capture_keys(handle, captions[:32]).flatten(0, 1).double()
    name = with_cov.names[0]
    drift = lambda e: (keys @ e.delta(name).T).norm().item()  # noqa: E731
    print(f"corpus outputs moved: {drift(with_cov):.3e} with the covariance term, {drift(without):.3e} without")
    assert drift(with_cov) < 0.75 * drift(without)  # measured: about half
    # a model folder's own locedit_corpus.txt takes precedence
    folder = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_dirs["sd1"], folder)
    (folder / CORPUS_FILE).write_text("# mine\na photo of a cat\na red car\n")
    from locedit import load_pipeline

    assert default_corpus(load_pipeline(folder)) == (["a photo of a cat", "a red car"], str(folder / CORPUS_FILE))
    with pytest.raises(ValueError, match="non-empty corpus"):
        quickfix(pipe, [("van gogh", "painting")], corpus=[])


def test_corpus_sums_cache_follows_the_weights(load_tiny):
    from locedit.edit.cache import disk_cache
    from locedit.edit.quickfix import _corpus_sums, _key_sums

    handle = text_encoders(load_tiny("sd1"))[0]
    captions = ["a photo of a cat", "a red car"]
    with disk_cache(False):  # memory only: what is reused is the in-memory entry
        first = _corpus_sums(handle, captions, 0)
        assert _corpus_sums(handle, captions, 0) is first  # reused
        with torch.no_grad():
            handle.module("attn_out", 0).weight.mul_(2.0)  # the edited weight does not enter the keys
        assert _corpus_sums(handle, captions, 0) is first
        with torch.no_grad():
            handle.module("token_embedding").weight.mul_(1.5)
        again = _corpus_sums(handle, captions, 0)
    total, count = _key_sums(handle, captions, 0, 64)
    assert again is not first and again[0] == captions and torch.equal(again[1], total) and again[2] == count
    assert not torch.equal(again[1], first[1])


def test_concept_matching_and_mining():
    from locedit.edit.quickfix import mine_captions, names_concept, substitute

    assert names_concept("A starry night by Van Gogh's brother", "van gogh")
    assert not names_concept("a vangogh print", "van gogh") and not names_concept("a caravan goghs", "van gogh")
    assert substitute("Van Gogh and van gogh", "van gogh", "monet") == "monet and monet"
    corpus = ["a cat", "a field by van gogh", "van gogh at night", "a dog by Van Gogh"]
    assert mine_captions(corpus, [("van gogh", "painting")], limit=2) == [
        ("a field by van gogh", "van gogh", "a field by painting", "painting"),
        ("van gogh at night", "van gogh", "painting at night", "painting"),
    ]
    assert mine_captions(corpus, [("van gogh", "painting")], limit=0) == []


def test_corpus_term_leaves_out_captions_naming_the_key(load_tiny):
    from locedit.edit.quickfix import _key_sums, corpus_moment

    handle = text_encoders(load_tiny("sd1"))[0]
    corpus = ["a photo of a cat", "a wheat field by van gogh", "a red car", "van gogh at night", "a dog"]
    naming = [c for c in corpus if "van gogh" in c]
    moment, used = corpus_moment(handle, corpus, exclude=naming)
    rest = [c for c in corpus if c not in naming]
    assert used == rest
    # the cached whole-corpus sum minus the excluded captions equals the moment of the rest
    total, count = _key_sums(handle, rest, 0, 64)
    assert torch.allclose(moment, total / count, rtol=1e-10, atol=1e-12)


def test_mined_corpus_captions_carry_the_edit_into_context(load_tiny):
    """Key captions from the corpus make the edit hold where the key sits inside a longer caption."""
    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]
    corpus = [
        f"a {a} {b} by van gogh" for a in ("large", "small", "quiet", "bright") for b in ("field", "house", "river")
    ]
    corpus += ["a photo of a cat", "a red car on a road", "a bowl of fruit", "a portrait of a woman"]
    probe_key, probe_value = "a quiet road by van gogh", "a quiet road by painting"  # a context not in the corpus
    span = find_subject_span(handle.tokenizer, probe_key, "van gogh")
    target = attn_out_at(handle, [probe_value], lambda i: [span[0]])[0]

    def error(**kwargs):
        edit = quickfix(pipe, [("van gogh", "painting")], corpus=corpus, module="attn_out", positions="last", **kwargs)
        edit.apply(pipe)
        got = attn_out_at(handle, [probe_key], lambda i: [span[1] - 1])[0]
        edit.revert(pipe)
        return edit, ((got - target).norm() / target.norm()).item()

    mined, err_mined = error()
    templates_only, err_templates = error(corpus_keys=0)
    stats = mined.meta["stats"][mined.names[0]]
    assert stats["mined_captions"] == 12 and stats["corpus_captions"] == 4
    assert templates_only.meta["stats"][templates_only.names[0]]["mined_captions"] == 0
    print(f"in-context error of the edited output: mined {err_mined:.3f}, templates only {err_templates:.3f}")
    assert err_mined < 0.5 * err_templates
    with pytest.raises(ValueError, match="corpus_keys must be >= 0"):
        quickfix(pipe, [("van gogh", "painting")], corpus_keys=-1)


def test_value_projection_edit_maps_the_key_tokens_onto_the_value_tokens(load_tiny):
    """The default module: v_proj rows are the key's own token inputs, paired from the last token
    ("van gogh" -> "painting" maps "gogh"), and the edit writes their values as the value's."""
    pipe = load_tiny("sd1")
    handle = text_encoders(pipe)[0]
    edit = quickfix(pipe, [("van gogh", "painting")], lam=1e-6, corpus_weight=0)
    assert edit.names == ["text_encoder.text_model.encoder.layers.0.self_attn.v_proj.weight"]
    assert edit.meta["module"] == "attn_v" and edit.meta["positions"] == "subject"
    assert edit.meta["stats"][edit.names[0]]["key_rows"] == len(TEMPLATES)  # one row ("gogh") per template
    keys = capture_keys(handle, [t.format("van gogh") for t in TEMPLATES], 0, "attn_v").double()
    values = capture_keys(handle, [t.format("painting") for t in TEMPLATES], 0, "attn_v").double()
    w, w_new = edit.before[edit.names[0]].double(), edit.after[edit.names[0]].double()
    for i, t in enumerate(TEMPLATES):
        kpos = find_subject_span(handle.tokenizer, t.format("van gogh"), "van gogh")[1] - 1
        vpos = find_subject_span(handle.tokenizer, t.format("painting"), "painting")[1] - 1
        got, want = w_new @ keys[i, kpos], w @ values[i, vpos]
        assert ((got - want).norm() / want.norm()).item() < 1e-3


def test_vocab_moment_is_every_token_at_every_position_but_the_keys():
    from locedit import load_pipeline
    from locedit.edit.quickfix import _cached_vocab_moment, vocab_moment

    handle = text_encoders(load_pipeline("builtin:shapes"))[0]
    emb = handle.module("embeddings")
    norm = handle.module("layer_norm1", 0)
    token, position = emb.token_embedding.weight.detach(), emb.position_embedding.weight.detach()
    exclude = handle.tokenizer("striped", add_special_tokens=False).input_ids
    keep = [i for i in range(token.shape[0]) if i not in exclude]
    with torch.no_grad():
        x = torch.cat([norm(token[keep] + position[p]) for p in range(handle.context_length)]).double()
    want = x.T @ x / x.shape[0]
    got = vocab_moment(handle, exclude)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)  # float32 products, float64 sums
    # the cached form (all pairs' sums, minus the key's pairs) is the same moment
    assert torch.allclose(_cached_vocab_moment(handle, exclude), got, rtol=1e-5, atol=1e-6)
    sampled = vocab_moment(handle, exclude, samples=500, seed=1)  # more pairs than samples: a seeded subset
    assert torch.equal(sampled, vocab_moment(handle, exclude, samples=500, seed=1))
    assert not torch.allclose(sampled, got) and torch.allclose(sampled, got, rtol=0.5, atol=0.2)


def test_vocab_prior_holds_words_no_corpus_caption_has():
    """'image' is in no caption of builtin:shapes' corpus: with the vocabulary prior, a striped ->
    plain edit moves that word's v_proj output far less than without it."""
    from locedit import load_pipeline
    from locedit.edit.quickfix import default_corpus

    pipe = load_pipeline("builtin:shapes")
    handle = text_encoders(pipe)[0]
    assert not any("image" in c.split() for c in default_corpus(pipe)[0])
    x = capture_keys(handle, ["an image of a red circle"], 0, "attn_v")[0].double()  # BOS, an, image, of, ...
    words = x[1:3]

    def moved(edit):
        return (
            (words @ edit.delta(edit.names[0]).T).norm() / (words @ edit.before[edit.names[0]].double().T).norm()
        ).item()

    with_prior = quickfix(pipe, [("striped", "plain")])
    without = quickfix(pipe, [("striped", "plain")], vocab_weight=0)
    print(f"'an image' v_proj outputs moved by {moved(with_prior):.3f} with the prior, {moved(without):.3f} without")
    assert moved(with_prior) < 0.25 * moved(without)
