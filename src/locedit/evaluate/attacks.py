"""Robustness of an edit to attacks: prompts that try to bring the removed concept back, judged like efficacy.

Three attack kinds, each built from the suite's efficacy and generality items that name the edit's key
(the *source* prompts), keeping each item's seed and what it judges (``key``, ``key_text``):

- ``paraphrase``: the key replaced by another name for it: its words alone and reordered ("brenner",
  "brenner karl"), and the names a model's world registers (`register_aliases`) or the user gives.
- ``misspell``: the key replaced by a seeded character perturbation (`misspellings`: drop, swap,
  duplicate or substitute a character, hyphenate, change case); a tokenizer splits most of them into
  subwords. Perturbations that tokenize exactly like the key (case, for CLIP's lower-casing
  tokenizer) are left out and counted.
- ``softprompt`` (UnlearnDiffAtk-style, Zhang et al. 2024): the key's tokens replaced by K soft token
  embeddings, optimised with Adam against the EDITED model so that its noise prediction for the
  attacked prompt matches the UNEDITED model's prediction for the source prompt, at random timesteps on
  latents the unedited model generated for the source prompts. The targets use seeds drawn apart from
  the suite's (never a judging seed). Its cost (steps, UNet passes, seconds) is reported.

Attack success rate: the share of attack prompts whose image shows the key, by the same judge as
efficacy (an image "shows the key" exactly when an efficacy item would count as applicable). It is
reported after the edit, on the unedited model (``base``: does the attack prompt draw the concept at
all?) and under the null control (a random ΔW of the edit's norm), each with its Wilson 95% interval
and n. The ``none`` row is the source prompts themselves, as written.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from locedit.errors import InvalidInputError
from locedit.evaluate.edit_eval import EvalReport, EvalSettings, Rate, null_edit
from locedit.evaluate.generate import generate
from locedit.evaluate.judges import Judge
from locedit.evaluate.suite import EFFICACY_GROUPS, EvalItem
from locedit.options import is_int, is_number, option, require

ATTACK_KINDS = ("paraphrase", "misspell", "softprompt")
PERTURBATIONS = ("drop", "swap", "duplicate", "substitute", "hyphenate", "casing")
RUNS = ("before", "after", "null")  # unedited model, edited model, null control

# QWERTY neighbours: a substituted character is one a typing finger could hit instead.
_KEYBOARD = {
    "a": "qwsz", "b": "vghn", "c": "xdfv", "d": "serfcx", "e": "wsdr", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "i": "ujko", "j": "huikmn", "k": "jiolm", "l": "kop", "m": "njk", "n": "bhjm",
    "o": "iklp", "p": "ol", "q": "wa", "r": "edft", "s": "awedxz", "t": "rfgy", "u": "yhji",
    "v": "cfgb", "w": "qase", "x": "zsdc", "y": "tghu", "z": "asx",
}  # fmt: skip
_STOP = frozenset({"the", "of", "a", "an", "and", "by", "in", "on", "with"})  # words that name nothing alone
_PLACEHOLDERS = ("x", "z", "q", "j", "v")  # single-token words a soft prompt's slots are written as


def parse_kinds(text: str) -> tuple[str, ...]:
    """`--attack` text -> attack kinds: "all" or a comma-separated subset of ATTACK_KINDS."""
    words = [w.strip() for w in str(text).split(",") if w.strip()]
    if words == ["all"]:
        return ATTACK_KINDS
    unknown = [w for w in words if w not in ATTACK_KINDS]
    if unknown or not words:
        raise InvalidInputError(
            f"unknown attack {', '.join(unknown) or repr(text)} (--attack); use all or a comma-separated list of "
            f"{', '.join(ATTACK_KINDS)}"
        )
    return tuple(k for k in ATTACK_KINDS if k in words)


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in str(text).split(",") if w.strip())


@dataclass
class AttackSettings:
    """Which attacks run on an evaluated edit, and their budgets (CLI: `locedit eval --attack ...`)."""

    # No attack unless asked: each kind adds three generation passes (before, after, null control).
    kinds: tuple[str, ...] = option(
        (),
        flag="--attack",
        parse=parse_kinds,
        metavar="KINDS",
        shown="none",
        help=f"attacks to run on the edit: all or a comma-separated list of {', '.join(ATTACK_KINDS)}",
    )
    # Attack prompts per kind: 40 gives a Wilson 95% interval of about ±0.1 at a rate of 0.2.
    prompts: int = option(40, flag="--attack-prompts", parse=int, metavar="N", help="attack prompts per attack kind")
    # paraphrase: names added to the key's own word variants and the model's registered aliases.
    aliases: tuple[str, ...] = option(
        (),
        parse=_parse_names,
        metavar="NAMES",
        shown="the key's words and the model's alias list",
        help="paraphrase: more names for the key (comma-separated)",
    )
    # misspell: distinct perturbed spellings of the key (each tokenized unlike the key).
    misspellings: int = option(8, parse=int, metavar="N", help="misspell: perturbed spellings of the key")
    # softprompt: soft tokens in place of the key's tokens (UnlearnDiffAtk prepends 5 discrete tokens).
    soft_tokens: int = option(4, parse=int, metavar="K", help="softprompt: soft token embeddings in place of the key")
    # softprompt: Adam steps; 50 keeps the attack CPU-feasible on the built-in model (a few seconds).
    soft_steps: int = option(50, parse=int, help="softprompt: optimisation steps")
    # softprompt: Adam learning rate, in token-embedding units (CLIP token embeddings have norms near 0.5-1).
    soft_lr: float = option(0.01, parse=float, help="softprompt: Adam learning rate")
    # softprompt: (latent, timestep) samples per optimisation step.
    soft_batch: int = 4
    # softprompt: target latents the unedited model generates for the source prompts (seeds apart from the suite's).
    soft_targets: int = 8
    # Seed of the perturbations, of the attack prompts' choice and of the soft prompt's targets and timesteps.
    attack_seed: int = option(0, parse=int, help="seed of the attacks")

    def __post_init__(self):
        self.kinds = parse_kinds(",".join(self.kinds)) if self.kinds else ()
        self.aliases = tuple(self.aliases)
        for name in ("prompts", "misspellings", "soft_tokens", "soft_steps", "soft_batch", "soft_targets"):
            require(self, name, is_int(getattr(self, name), 1), "a positive integer")
        require(self, "soft_lr", is_number(self.soft_lr) and self.soft_lr > 0, "a positive number")
        require(self, "attack_seed", is_int(self.attack_seed, 0), "a non-negative integer")


# ---------------------------------------------------------------- perturbations and aliases
@dataclass(frozen=True)
class Variant:
    """One way an attack writes the key: `text`, and how it was made (`how`: a perturbation, "alias", ...)."""

    text: str
    how: str


def _perturb_word(word: str, op: str, rng: np.random.Generator) -> str:
    """`word` changed by one perturbation `op` at a random position (the first letter kept where possible)."""
    n = len(word)
    if op == "casing":
        forms = [word.upper(), word.capitalize(), "".join(c.upper() if i % 2 else c for i, c in enumerate(word))]
        return forms[int(rng.integers(len(forms)))]
    if n < 2:
        return word
    i = int(rng.integers(1, n))  # 1..n-1
    if op == "drop":
        return word[:i] + word[i + 1 :]
    if op == "swap":
        i = i - 1 if i == n - 1 else i
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "duplicate":
        return word[:i] + word[i] + word[i:]
    if op == "substitute":
        near = _KEYBOARD.get(word[i].lower(), "aeiou")
        return word[:i] + near[int(rng.integers(len(near)))] + word[i + 1 :]
    if op == "hyphenate":
        return word[:i] + "-" + word[i:]
    raise InvalidInputError(f"unknown perturbation {op!r}; use one of {', '.join(PERTURBATIONS)}")


def misspellings(text: str, n: int, seed: int = 0, ops: Sequence[str] = PERTURBATIONS) -> list[Variant]:
    """Up to `n` distinct spellings of `text`, each one perturbation of one word, the perturbations taken in
    turn (drop, swap, duplicate, substitute, hyphenate, casing); deterministic in `seed`. None equals `text`."""
    rng = np.random.default_rng(seed)
    words = text.split()
    editable = [i for i, w in enumerate(words) if w.lower() not in _STOP] or list(range(len(words)))
    out, seen = [], {text}
    for attempt in range(50 * n):
        if len(out) == n or not words:
            break
        op = ops[attempt % len(ops)]
        j = editable[int(rng.integers(len(editable)))]
        changed = [*words[:j], _perturb_word(words[j], op, rng), *words[j + 1 :]]
        candidate = " ".join(changed)
        if candidate not in seen:
            seen.add(candidate)
            out.append(Variant(candidate, op))
    return out


def name_variants(concept: str) -> list[str]:
    """Other ways a user writes a multi-word name: each naming word alone, then the words reversed
    ("karl brenner" -> "karl", "brenner", "brenner karl"); [] for a one-word concept."""
    words = concept.split()
    if len(words) < 2:
        return []
    naming = [w for w in words if w.lower() not in _STOP]
    out = [w for w in naming if w != concept] + [" ".join(reversed(naming))]
    return list(dict.fromkeys(v for v in out if v and v != concept))


# Alias sources: callables (concept, pipe) -> other names of the concept in that model's world (or []).
# The built-in worlds register theirs (locedit.builtin.attacks).
AliasSource = Callable[[str, object], list[str]]
ALIAS_SOURCES: list[AliasSource] = []


def register_aliases(source: AliasSource) -> None:
    """Add a source of aliases: `source(concept, pipe)` returns other names of `concept` for `pipe`'s model."""
    ALIAS_SOURCES.append(source)


def aliases(concept: str, pipe=None, extra: Sequence[str] = ()) -> list[Variant]:
    """Other names of `concept`: `extra` (given by the user), the registered sources' for `pipe`, then the
    name's own words alone and reordered; distinct, never the concept itself."""
    found = [Variant(a, "given") for a in extra]
    for source in ALIAS_SOURCES:
        found += [Variant(a, "world") for a in source(concept, pipe)]
    found += [Variant(a, "name words") for a in name_variants(concept)]
    out, seen = [], {concept.lower()}
    for v in found:
        if v.text.lower() not in seen:
            seen.add(v.text.lower())
            out.append(v)
    return out


# ---------------------------------------------------------------- attack prompts
@dataclass
class AttackItem:
    """One attack prompt: `item` (the source item with its prompt rewritten; its seed and what it judges
    kept), the source prompt, and the variant written in place of the key."""

    item: EvalItem
    source: str
    variant: str
    how: str

    def to_json(self) -> dict:
        return {"item": self.item.to_json(), "source": self.source, "variant": self.variant, "how": self.how}

    @classmethod
    def from_json(cls, obj: dict) -> AttackItem:
        return cls(EvalItem(**obj["item"]), obj["source"], obj["variant"], obj["how"])


def _key_pattern(key: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in key.split()) + r"(?!\w)", re.IGNORECASE)


def source_items(items: Sequence[EvalItem], key: str) -> list[EvalItem]:
    """The efficacy and generality items whose prompt names `key` as whole words (the attacks' sources)."""
    pattern = _key_pattern(key)
    return [it for it in items if it.group in EFFICACY_GROUPS and pattern.search(it.prompt)]


def _fits(pipe, prompt: str) -> bool:
    """Whether `prompt` fits every text encoder's context (start and end tokens included)."""
    from locedit.models import text_encoders

    return all(len(h.tokenizer(prompt, truncation=False).input_ids) <= h.context_length for h in text_encoders(pipe))


def _token_ids(pipe, text: str) -> tuple[int, ...]:
    from locedit.models import text_encoders

    tok = text_encoders(pipe)[0].tokenizer
    return tuple(tok(text, add_special_tokens=False).input_ids)


def attack_items(
    pipe, sources: Sequence[EvalItem], key: str, variants: Sequence[Variant], n: int
) -> tuple[list[AttackItem], int]:
    """Up to `n` attack prompts, the key written as a variant: every source once (source s with variant s,
    cycled), then every source with the next variant, and so on (all source × variant pairs, no repeat);
    prompts longer than the text encoders' context left out. Returns (items, number left out as too long)."""
    pattern = _key_pattern(key)
    out, too_long, seen = [], 0, set()
    if not sources or not variants:
        return out, 0
    for i in range(len(sources) * len(variants)):
        if len(out) == n:
            break
        s = i % len(sources)
        src, var = sources[s], variants[(s + i // len(sources)) % len(variants)]
        prompt = pattern.sub(lambda _, text=var.text: text, src.prompt, count=1)
        if (prompt, src.seed) in seen:
            continue
        seen.add((prompt, src.seed))
        if not _fits(pipe, prompt):
            too_long += 1
            continue
        out.append(AttackItem(replace(src, prompt=prompt), src.prompt, var.text, var.how))
    return out, too_long


# ---------------------------------------------------------------- results
def shows_key(judge: Judge, item: EvalItem, observation: dict) -> bool:
    """Whether an image (its judge observation) shows `item`'s key: exactly when an efficacy item with
    this image before the edit would count as applicable (the same judge, the same rule)."""
    return bool(judge.outcome(replace(item, group="efficacy"), observation, observation).applicable)


@dataclass
class AttackResult:
    """One attack kind on one edit: its prompts, the judge's observations and verdicts per run, its cost.

    observations / shows: "before" (unedited), "after" (edited), "null" (null control) -> one per item.
    cost: what the attack took (prompts left out, variants, and for softprompt steps, UNet passes, seconds).
    """

    kind: str
    items: list[AttackItem]
    observations: dict[str, list[dict]]
    shows: dict[str, list[bool]]
    cost: dict = field(default_factory=dict)

    def rate(self, which: str) -> Rate:
        """Share of the attack prompts whose `which` image shows the key."""
        flags = self.shows.get(which, [])
        return Rate(sum(flags), len(flags))

    def row(self) -> dict:
        """The results row: group "attack:<kind>", metric "shows_key", the edited model's rate, then
        base_* (unedited) and null_* (null control)."""
        row = {"group": f"attack:{self.kind}", "metric": "shows_key", **self.rate("after").to_json()}
        for which, prefix in (("before", "base"), ("null", "null")):
            if which in self.shows:
                row.update({f"{prefix}_{k}": v for k, v in self.rate(which).to_json().items()})
        return row

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "items": [a.to_json() for a in self.items],
            "observations": self.observations,
            "shows": self.shows,
            "cost": self.cost,
        }

    @classmethod
    def from_json(cls, obj: dict) -> AttackResult:
        items = [AttackItem.from_json(a) for a in obj["items"]]
        return cls(obj["kind"], items, obj["observations"], obj["shows"], obj.get("cost", {}))


def exact_result(report: EvalReport, judge: Judge, key: str) -> AttackResult:
    """The ``none`` row: the source prompts as written (the key spelt as the edit was made), from an
    evaluation's own before / after / null observations (no generation)."""
    pattern = _key_pattern(key)
    idx = [i for i, it in enumerate(report.items) if it.group in EFFICACY_GROUPS and pattern.search(it.prompt)]
    items = [AttackItem(report.items[i], report.items[i].prompt, key, "as written") for i in idx]
    observations = {w: [obs[i] for i in idx] for w, obs in report.observations.items()}
    shows = {w: [shows_key(judge, a.item, o) for a, o in zip(items, observations[w])] for w in observations}
    return AttackResult("none", items, observations, shows, {"prompts": len(items)})


def observe_attack(
    pipe,
    edit,
    items: Sequence[AttackItem],
    judge: Judge,
    cfg: EvalSettings,
    progress: Callable[[int], None] | None = None,
    context: Callable[[], object] | None = None,
) -> tuple[dict[str, list[dict]], dict[str, list[bool]]]:
    """Generate and judge `items` on the unedited model ("before"), with the edit ("after") and with its
    null control ("null", when cfg.null), each inside `context()` if given; the pipeline is left as it was.

    Returns:
        (observations, shows): run -> the judge's observation / whether the image shows the key, per item.
    """
    prompts, seeds = [a.item.prompt for a in items], [a.item.seed for a in items]
    evals = [it.item for it in items]
    runs = {"before": None, "after": edit, **({"null": null_edit(edit, cfg.null_seed)} if cfg.null else {})}
    observations = {}
    for which, applied in runs.items():
        if applied is not None:
            applied.apply(pipe)
        try:
            with context() if context is not None else _nothing():
                images = generate(pipe, prompts, seeds, cfg.steps, cfg.guidance, cfg.batch, progress)
        finally:
            if applied is not None:
                applied.revert(pipe)
        observations[which] = judge.observe(images, evals)
    shows = {w: [shows_key(judge, it, o) for it, o in zip(evals, obs)] for w, obs in observations.items()}
    return observations, shows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def edit_key(edit) -> str:
    """The concept an edit removed (its one pair's key); InvalidInputError for edits of several pairs."""
    pairs = edit.meta.get("pairs") or []
    if len(pairs) != 1:
        raise InvalidInputError(
            f"attacks target one removed concept; this edit has {len(pairs)} (key, value) pairs: "
            "evaluate an edit of one pair"
        )
    return str(pairs[0][0])


def text_attack(
    kind: str,
    pipe,
    edit,
    items: Sequence[EvalItem],
    judge: Judge,
    settings: AttackSettings,
    eval_settings: EvalSettings,
    progress: Callable[[int], None] | None = None,
) -> AttackResult:
    """The ``paraphrase`` or ``misspell`` attack of `edit` on the suite `items` (see the module docstring)."""
    key = edit_key(edit)
    sources = source_items(items, key)
    if kind == "paraphrase":
        variants, dropped = aliases(key, pipe, settings.aliases), 0
    elif kind == "misspell":
        key_ids = _token_ids(pipe, key)
        seen, variants, dropped = {key_ids}, [], 0
        for v in misspellings(key, 4 * settings.misspellings, settings.attack_seed):
            ids = _token_ids(pipe, v.text)
            if ids in seen:
                dropped += 1  # tokenized like the key (or like an earlier variant): no attack
                continue
            seen.add(ids)
            variants.append(v)
            if len(variants) == settings.misspellings:
                break
    else:
        raise InvalidInputError(f"unknown text attack {kind!r}; use paraphrase or misspell")
    attack, too_long = attack_items(pipe, sources, key, variants, settings.prompts)
    if not attack:
        raise InvalidInputError(
            f"the {kind} attack has no prompt: {len(sources)} suite prompts name {key!r} and "
            f"{len(variants)} variants were found ({too_long} prompts too long); give a suite whose efficacy or "
            "generality prompts name the key" + (" or --aliases" if kind == "paraphrase" else "")
        )
    observations, shows = observe_attack(pipe, edit, attack, judge, eval_settings, progress)
    cost = {
        "prompts": len(attack),
        "sources": len(sources),
        "variants": [{"text": v.text, "how": v.how} for v in variants],
        "too_long": too_long,
        "same_tokens_dropped": dropped,
    }
    return AttackResult(kind, attack, observations, shows, cost)


# ---------------------------------------------------------------- the soft-prompt attack
def _placeholder(tokenizer, prompts: Sequence[str]) -> tuple[str, int]:
    """A one-token word that no prompt contains, and its id: the soft tokens' slots in a prompt."""
    used = {i for p in prompts for i in tokenizer(p).input_ids}
    for word in _PLACEHOLDERS:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) == 1 and ids[0] not in used:
            return word, ids[0]
    raise InvalidInputError("no free one-token placeholder word for the soft prompt; shorten the suite's prompts")


@contextmanager
def soft_prompt(encoder: torch.nn.Module, placeholder_id: int, soft: torch.Tensor) -> Iterator[None]:
    """While active, the j-th `placeholder_id` token of each prompt embeds as soft[j] (soft: (K, d)).

    Rows (prompts) without the placeholder are untouched (the unconditional prompt of guidance); a row
    with the placeholder must have exactly K of them. Gradients flow into `soft`.
    """
    k = soft.shape[0]

    def hook(module, args, output):
        ids = args[0] if args else None
        if ids is None:
            return output
        mask = ids == placeholder_id
        if not bool(mask.any()):
            return output
        counts = mask.sum(1)
        if bool(((counts != 0) & (counts != k)).any()):
            raise InvalidInputError(f"a prompt holds the soft prompt's placeholder but not exactly {k} times")
        where = mask.nonzero()  # row-major: the j-th slot of each row in order
        out = output.clone()
        out[where[:, 0], where[:, 1]] = soft.to(out.dtype).repeat(int((counts > 0).sum()), 1)
        return out

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """Parameters of `modules` without gradients for the duration (their flags restored after)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@dataclass
class SoftPrompt:
    """An optimised soft prompt: `soft` (K, d) token embeddings written at `placeholder` slots, and its cost
    (loss on the whole target pool before and after, per-step losses, steps, UNet passes, seconds)."""

    soft: torch.Tensor
    placeholder: str
    placeholder_id: int
    cost: dict


def optimise_soft_prompt(
    pipe,
    edit,
    sources: Sequence[EvalItem],
    key: str,
    settings: AttackSettings,
    eval_settings: EvalSettings,
    avoid_seeds: Sequence[int] = (),
    progress: Callable[[int], None] | None = None,
) -> SoftPrompt:
    """Optimise `settings.soft_tokens` soft token embeddings in place of `key` against the edited model.

    Objective (UnlearnDiffAtk's, with the unedited model as teacher): over a fixed pool of
    soft_steps × soft_batch samples (target latent x0 of a source prompt, timestep t ~ U[0, T), noise),
    mean ||ε_edited(x_t, t, E'(prompt with the soft tokens)) − ε_unedited(x_t, t, E(source prompt))||².
    The x0 are generated by the unedited model for the source prompts with seeds outside `avoid_seeds`
    (the suite's judging seeds). The soft tokens start as the key's own token embeddings, cycled.
    The pipeline is left as it was. `progress(1)` is called after each step.
    """
    from diffusers import DDPMScheduler

    from locedit.models import text_encoders

    handles = text_encoders(pipe)
    if len(handles) != 1:
        raise InvalidInputError(
            f"the softprompt attack supports pipelines with one text encoder (SD1, SD2, built-in); this one has "
            f"{len(handles)}: use --attack paraphrase,misspell"
        )
    start = time.perf_counter()
    h, s = handles[0], settings
    key_pattern = _key_pattern(key)
    word, pid = _placeholder(h.tokenizer, [it.prompt for it in sources])
    slots = " ".join([word] * s.soft_tokens)
    attacked = [key_pattern.sub(lambda _: slots, it.prompt, count=1) for it in sources]
    fits = [i for i, p in enumerate(attacked) if _fits(pipe, p)]
    if not fits:
        raise InvalidInputError(
            f"no source prompt fits the text encoder's context with {s.soft_tokens} soft tokens in place of "
            f"{key!r}; lower --soft-tokens"
        )
    sources, attacked = [sources[i] for i in fits], [attacked[i] for i in fits]
    rng = np.random.default_rng(s.attack_seed)
    avoid = set(int(x) for x in avoid_seeds)
    seeds: list[int] = []
    while len(seeds) < s.soft_targets:
        seed = int(rng.integers(2**31))
        if seed not in avoid and seed not in seeds:
            seeds.append(seed)
    which = [i % len(sources) for i in range(s.soft_targets)]
    device, dtype = pipe.unet.device, pipe.unet.dtype
    unet, encoder = pipe.unet, h.encoder
    noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(s.attack_seed)
    pool = s.soft_steps * s.soft_batch
    target = torch.randint(0, s.soft_targets, (pool,), generator=gen)
    steps_t = torch.randint(0, noise_schedule.config.num_train_timesteps, (pool,), generator=gen)
    with torch.no_grad():
        x0 = pipe(
            [sources[i].prompt for i in which],
            generator=[torch.Generator().manual_seed(x) for x in seeds],
            num_inference_steps=eval_settings.steps,
            guidance_scale=eval_settings.guidance,
            output_type="latent",
        ).images.float()
        noise = torch.randn((pool, *x0.shape[1:]), generator=gen)
        x_t = noise_schedule.add_noise(x0[target], noise, steps_t)
        source_ids = h.tokenize([sources[i].prompt for i in which]).to(device)
        attacked_ids = h.tokenize([attacked[i] for i in which]).to(device)
        cond = encoder(source_ids)[0]
        teacher = []
        for lo in range(0, pool, s.soft_batch):
            hi = lo + s.soft_batch
            hidden = cond[target[lo:hi].to(device)]
            teacher.append(unet(x_t[lo:hi].to(device, dtype), steps_t[lo:hi].to(device), hidden).sample.float())
        teacher = torch.cat(teacher)
    key_ids = list(_token_ids(pipe, key))
    table = encoder.get_input_embeddings().weight.detach().float().cpu()
    soft = table[[key_ids[j % len(key_ids)] for j in range(s.soft_tokens)]].clone().to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([soft], lr=s.soft_lr)

    def loss_of(lo: int, hi: int) -> torch.Tensor:
        idx = target[lo:hi].to(device)
        with soft_prompt(encoder, pid, soft):
            hidden = encoder(attacked_ids[idx])[0]
        pred = unet(x_t[lo:hi].to(device, dtype), steps_t[lo:hi].to(device), hidden).sample.float()
        return torch.nn.functional.mse_loss(pred, teacher[lo:hi].to(device))

    def pool_loss() -> float:
        with torch.no_grad():
            return float(
                sum(loss_of(i, i + s.soft_batch) * min(s.soft_batch, pool - i) for i in range(0, pool, s.soft_batch))
                / pool
            )

    losses: list[float] = []
    edit.apply(pipe)
    try:
        with _frozen(unet, encoder):
            loss_start = pool_loss()
            for step in range(s.soft_steps):
                lo = step * s.soft_batch
                loss = loss_of(lo, lo + s.soft_batch)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
                if progress is not None:
                    progress(1)
            loss_end = pool_loss()
    finally:
        edit.revert(pipe)
    seconds = time.perf_counter() - start
    cost = {
        "soft_tokens": s.soft_tokens,
        "steps": s.soft_steps,
        "batch": s.soft_batch,
        "lr": s.soft_lr,
        "targets": s.soft_targets,
        "target_seeds": seeds,
        # UNet forward passes (images; a guided denoising step is two): the target latents, the teacher's
        # predictions, the pool loss before and after, and the optimisation steps (each also a backward pass)
        "unet_passes": {
            "targets": s.soft_targets * eval_settings.steps * (2 if eval_settings.guidance > 1 else 1),
            "teacher": pool,
            "loss_checks": 2 * pool,
            "optimisation": pool,
        },
        "loss_start": loss_start,
        "loss_end": loss_end,
        "losses": losses,
        "seconds": round(seconds, 3),
    }
    return SoftPrompt(soft.detach().cpu(), word, pid, cost)


def softprompt_attack(
    pipe,
    edit,
    items: Sequence[EvalItem],
    judge: Judge,
    settings: AttackSettings,
    eval_settings: EvalSettings,
    progress: Callable[[int], None] | None = None,
) -> AttackResult:
    """The ``softprompt`` attack: optimise a soft prompt (optimise_soft_prompt) on target seeds apart from
    the suite's, then judge up to settings.prompts source prompts (their own seeds) with it."""
    key = edit_key(edit)
    sources = source_items(items, key)
    if not sources:
        raise InvalidInputError(
            f"the softprompt attack has no prompt: no efficacy or generality prompt of the suite names {key!r}"
        )
    from locedit.models import text_encoders

    soft = optimise_soft_prompt(
        pipe, edit, sources, key, settings, eval_settings, avoid_seeds=[it.seed for it in items], progress=progress
    )
    slots = " ".join([soft.placeholder] * settings.soft_tokens)
    pattern = _key_pattern(key)
    attack = []
    for src in sources:
        prompt = pattern.sub(lambda _: slots, src.prompt, count=1)
        if len(attack) < settings.prompts and _fits(pipe, prompt):
            attack.append(AttackItem(replace(src, prompt=prompt), src.prompt, slots, "soft tokens"))
    encoder = text_encoders(pipe)[0].encoder
    start = time.perf_counter()
    observations, shows = observe_attack(
        pipe,
        edit,
        attack,
        judge,
        eval_settings,
        progress,
        context=lambda: soft_prompt(encoder, soft.placeholder_id, soft.soft.to(encoder.device)),
    )
    seconds = round(time.perf_counter() - start, 3)
    cost = {**soft.cost, "prompts": len(attack), "sources": len(sources), "judging_seconds": seconds}
    cost["soft_norms"] = [round(float(x), 4) for x in soft.soft.norm(dim=1)]
    return AttackResult("softprompt", attack, observations, shows, cost)


def attack_size(kind: str, settings: AttackSettings, eval_settings: EvalSettings) -> int:
    """Progress units of one attack (images generated, plus optimisation steps for softprompt)."""
    images = settings.prompts * (2 + eval_settings.null)
    return images + (settings.soft_steps if kind == "softprompt" else 0)


def run_attack(
    kind: str,
    pipe,
    edit,
    items: Sequence[EvalItem],
    judge: Judge,
    settings: AttackSettings | None = None,
    eval_settings: EvalSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> AttackResult:
    """Run one attack kind (ATTACK_KINDS) of `edit` on `pipe` with the suite `items`; the pipeline is left
    as it was. `progress` is called with increments (images generated, optimisation steps)."""
    settings = settings or AttackSettings()
    eval_settings = eval_settings or EvalSettings()
    if kind == "softprompt":
        return softprompt_attack(pipe, edit, items, judge, settings, eval_settings, progress)
    if kind in ("paraphrase", "misspell"):
        return text_attack(kind, pipe, edit, items, judge, settings, eval_settings, progress)
    raise InvalidInputError(f"unknown attack {kind!r}; use one of {', '.join(ATTACK_KINDS)}")


def summary_lines(results: Sequence[AttackResult]) -> list[str]:
    """Attack success rates as text lines: kind, n, after-edit rate [95% CI], unedited, null control."""
    head = f"{'attack':12s} {'n':>4s}  {'success':>7s} [95% CI]    {'unedited':>8s} [95% CI]    null control"
    lines = [head, "-" * len(head)]
    for r in results:
        cells = []
        for which in ("after", "before", "null"):
            if which not in r.shows:
                cells.append("    -")
                continue
            rate = r.rate(which)
            lo, hi = rate.interval
            value = "  -  " if not rate.n else f"{rate.rate:5.2f}"
            cells.append(f"{value} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"{r.kind:12s} {r.rate('after').n:4d}    {cells[0]}    {cells[1]}  {cells[2]}")
        if r.kind == "softprompt":
            c = r.cost
            lines.append(
                f"  softprompt cost: {c['soft_tokens']} tokens, {c['steps']} steps, loss {c['loss_start']:.4g} -> "
                f"{c['loss_end']:.4g}, {c['seconds']:.1f} s to optimise"
            )
    return lines
