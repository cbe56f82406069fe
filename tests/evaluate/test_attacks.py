"""Attacks on an edit: the perturbation and alias generators, attack prompts, the soft-prompt attack on a
tiny model (its loss goes down, the pipeline is left as it was), and the harness finding a planted
weakness on the built-in model: an edit that only removes one exact spelling."""

from __future__ import annotations

import pytest
import torch

from locedit.errors import InvalidInputError
from locedit.evaluate.attacks import (
    ATTACK_KINDS,
    PERTURBATIONS,
    AttackItem,
    AttackSettings,
    Variant,
    aliases,
    attack_items,
    misspellings,
    name_variants,
    observe_attack,
    optimise_soft_prompt,
    parse_kinds,
    run_attack,
    soft_prompt,
    source_items,
)
from locedit.evaluate.edit_eval import EvalSettings
from locedit.evaluate.suite import EvalItem


@pytest.fixture(scope="module")
def shapes():
    from locedit import load_pipeline

    return load_pipeline("builtin:shapes")


@pytest.fixture(scope="module")
def clip_tokenizer(tokenizer_files):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(tokenizer_files / "vocab.json"), str(tokenizer_files / "merges.txt"))


def test_misspellings_are_deterministic_distinct_and_cover_every_perturbation():
    first = misspellings("karl brenner", 12, seed=3)
    assert first == misspellings("karl brenner", 12, seed=3)  # seeded
    assert first != misspellings("karl brenner", 12, seed=4)
    texts = [v.text for v in first]
    assert len(texts) == 12 == len(set(texts)) and "karl brenner" not in texts
    assert {v.how for v in first} == set(PERTURBATIONS)
    for v in first:  # one word changed, by the named perturbation
        changed = [(a, b) for a, b in zip("karl brenner".split(), v.text.split()) if a != b]
        assert len(changed) == 1, v
        before, after = changed[0]
        if v.how == "drop":
            assert len(after) == len(before) - 1
        elif v.how in ("duplicate", "hyphenate"):
            assert len(after) == len(before) + 1 and (v.how != "hyphenate" or "-" in after)
        elif v.how == "swap":
            assert sorted(after) == sorted(before)
        elif v.how == "casing":
            assert after.lower() == before
        else:
            assert len(after) == len(before) and sum(a != b for a, b in zip(after, before)) == 1


@pytest.mark.parametrize("word", ["striped", "brenner", "gogh"])
def test_the_tokenizers_split_misspellings_into_subwords(word, shapes, clip_tokenizer):
    for tokenizer in (shapes.tokenizer, clip_tokenizer):
        original = tokenizer(word, add_special_tokens=False).input_ids
        if len(original) > 1:
            continue  # not a word of this vocabulary ("gogh" in the built-in one): already letters
        split = []
        for v in misspellings(word, 10, seed=0):
            ids = tokenizer(v.text, add_special_tokens=False).input_ids
            if v.how == "casing":
                assert ids == original  # CLIP lower-cases: the harness drops these
                continue
            assert ids != original, v
            split.append(len(ids) > len(original))
        # the built-in vocabulary spells every unknown word in letters; CLIP's sometimes lands on another
        # word ("striped" -> "stripe"), mostly on subwords
        assert all(split) if tokenizer is shapes.tokenizer else sum(split) >= 0.7 * len(split), (word, split)


def test_aliases_and_kinds():
    import locedit.builtin  # noqa: F401  (registers the built-in worlds' aliases)

    assert name_variants("karl brenner") == ["karl", "brenner", "brenner karl"]
    assert name_variants("the flag of veloria") == ["flag", "veloria", "veloria flag"]
    assert name_variants("striped") == []
    found = [v.text for v in aliases("striped", extra=["lined"])]
    assert found[0] == "lined" and "stripes" in found and "striped" not in found
    assert "veloria's flag" in [v.text for v in aliases("veloria")]
    assert parse_kinds("all") == ATTACK_KINDS and parse_kinds("softprompt,misspell") == ("misspell", "softprompt")
    with pytest.raises(InvalidInputError, match="unknown attack typo"):
        parse_kinds("misspell,typo")
    with pytest.raises(InvalidInputError, match="--soft-steps / soft_steps must be a positive integer"):
        AttackSettings(soft_steps=0)


def test_attack_prompts_pair_every_source_with_variants_and_skip_long_ones(shapes):
    sources = [
        EvalItem(f"a {c} circle in the style of karl brenner", "efficacy", i, key={"style": "striped"})
        for i, c in enumerate(["red", "blue", "green"])
    ]
    other = EvalItem("a red circle on a plain background", "efficacy", 9, key={"style": "striped"})
    assert source_items([*sources, other], "karl brenner") == sources
    variants = [Variant("brenner", "x"), Variant("karl", "x")]
    items, too_long = attack_items(shapes, sources, "karl brenner", variants, n=10)
    assert too_long == 0 and len(items) == 6  # every (source, variant) pair once
    assert len({(a.item.prompt, a.item.seed) for a in items}) == 6
    assert items[0].item.prompt == "a red circle in the style of brenner" and items[0].item.seed == 0
    assert items[1].item.prompt == "a blue circle in the style of karl" and items[1].source == sources[1].prompt
    long = [Variant("k-a-r-l b-r-e-n-n-e-r", "hyphenate")]  # 21 letter tokens: over the 16-token context
    assert attack_items(shapes, sources, "karl brenner", long, n=10) == ([], 3)


def test_soft_prompt_attack_lowers_its_loss_and_leaves_the_pipeline_as_it_was(load_tiny):
    from locedit import quickfix

    pipe = load_tiny("sd1")
    edit = quickfix(pipe, [("van gogh", "painting")])
    state = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    sources = [EvalItem("a painting by van gogh", "efficacy", 7, key_text="van gogh", value_text="a painting")]
    settings = AttackSettings(soft_tokens=3, soft_steps=12, soft_lr=0.005, soft_batch=2, soft_targets=2, attack_seed=1)
    cfg = EvalSettings(steps=2, guidance=1.0)
    soft = optimise_soft_prompt(pipe, edit, sources, "van gogh", settings, cfg, avoid_seeds=[7])
    assert soft.soft.shape == (3, pipe.text_encoder.config.hidden_size)
    assert soft.cost["loss_end"] < 0.5 * soft.cost["loss_start"]  # the whole target pool, before and after
    assert len(soft.cost["losses"]) == 12 and 7 not in soft.cost["target_seeds"]
    again = optimise_soft_prompt(pipe, edit, sources, "van gogh", settings, cfg, avoid_seeds=[7])
    assert torch.equal(soft.soft, again.soft)  # seeded
    assert all(torch.equal(v, state[k]) for k, v in pipe.text_encoder.state_dict().items())  # edit reverted
    embed = pipe.text_encoder.get_input_embeddings()
    assert not embed._forward_hooks  # the soft prompt's hook is gone
    ids = torch.tensor([[5, soft.placeholder_id, 9, soft.placeholder_id, soft.placeholder_id, 6], [5, 9, 9, 9, 9, 6]])
    with soft_prompt(pipe.text_encoder, soft.placeholder_id, soft.soft):
        out = embed(ids)
    assert torch.equal(out[0, [1, 3, 4]], soft.soft) and torch.equal(out[1], embed(ids[1]))
    assert torch.equal(out[0, 0], embed.weight[5])


class ExactSpellingEdit:
    """The planted weakness: an "edit" that draws `value` for the exact token sequence of `key` only (the
    token embeddings of that sequence are swapped for the value's), and no other spelling or name.
    It wraps a real Edit with ΔW = 0 (so the null control is the unedited model)."""

    def __init__(self, pipe, like, key: str, value: str):
        from locedit.edit.edit import Edit

        tok = pipe.tokenizer
        self.key = tok(key, add_special_tokens=False).input_ids
        self.value = tok(value, add_special_tokens=False).input_ids
        assert len(self.key) == len(self.value)
        self.inner = Edit(dict(like.before), dict(like.before), {**like.meta, "method": "exact-spelling"})
        self.names, self.before, self.after, self.meta = (
            self.inner.names,
            self.inner.before,
            self.inner.after,
            self.inner.meta,
        )
        self.delta, self._handle = self.inner.delta, None

    def apply(self, pipe):
        self.inner.apply(pipe)
        embed, key, value = pipe.text_encoder.get_input_embeddings(), self.key, self.value

        def hook(module, args, out):
            ids, out = args[0], out.clone()
            for b in range(ids.shape[0]):
                row = ids[b].tolist()
                for s in range(len(row) - len(key) + 1):
                    if row[s : s + len(key)] == key:
                        out[b, s : s + len(key)] = module.weight[value]
            return out

        self._handle = embed.register_forward_hook(hook)
        return self

    def revert(self, pipe):
        self._handle.remove()
        self.inner.revert(pipe)
        return self


def test_the_harness_finds_a_planted_weakness(shapes):
    """An edit that removes one exact spelling of the artist: the exact prompts lose the style, but the
    surname, the first name, the names reordered and misspellings bring it back; the library's edit of the
    same pair resists them (the issue measured 0 of 40 for the surname and misspellings)."""
    from locedit import quickfix
    from locedit.builtin.edit_suite import edit_suite
    from locedit.evaluate.judges import make_judge

    robust = quickfix(shapes, [("karl brenner", "mira solen")])
    planted = ExactSpellingEdit(shapes, robust, "karl brenner", "mira solen")
    items = edit_suite("karl brenner", "mira solen", n=6, seed=2, exclude=robust.meta["fit_captions"])
    judge = make_judge("builtin")
    settings = AttackSettings(prompts=10, misspellings=5)
    cfg = EvalSettings(steps=8, null=False)
    sources = source_items(items, "karl brenner")
    exact = [AttackItem(s, s.prompt, "karl brenner", "as written") for s in sources[:8]]
    rates = {}
    for name, edit in (("planted", planted), ("robust", robust)):
        _, shows = observe_attack(shapes, edit, exact, judge, cfg)
        rates[name, "none"] = sum(shows["after"]) / len(exact)
        assert sum(shows["before"]) >= 0.75 * len(exact)  # the unedited model draws the style
        for kind in ("paraphrase", "misspell"):
            result = run_attack(kind, shapes, edit, items, judge, settings, cfg)
            assert result.rate("after").n >= 8 and result.rate("before").rate >= 0.75, (kind, result.cost)
            rates[name, kind] = result.rate("after").rate
    assert rates["planted", "none"] <= 0.25 and rates["robust", "none"] <= 0.25, rates  # both remove the exact name
    assert rates["planted", "paraphrase"] >= 0.75 and rates["planted", "misspell"] >= 0.6, rates
    assert rates["robust", "paraphrase"] <= 0.25 and rates["robust", "misspell"] <= 0.25, rates
