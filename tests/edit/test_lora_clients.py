"""Kohya LoRA files apply in full in every client: each client's loader, restated here, rebuilds ΔW.

The `*_deltas` functions restate how each client turns a kohya file into weight changes of the text
encoders (key mapping, scale rule, which layers it can change), naming the client source they follow;
diffusers runs for real. Every client must reproduce the edit's ΔW and leave every other weight
alone. `test_a1111_drops_openclip_out_proj_without_companions` shows that the AUTOMATIC1111 rule
which made the zero q/k/v companions necessary is in force here, so these tests catch that bug.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from locedit import quickfix
from locedit.models import resolve_text_module
from locedit.models.families import num_text_layers

ENCODERS = {"sd1": ("text_encoder",), "sd2": ("text_encoder",), "sdxl": ("text_encoder", "text_encoder_2")}
OPENCLIP = {"sd1": (), "sd2": ("text_encoder",), "sdxl": ("text_encoder_2",)}  # open_clip models in A1111
CLIP_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
QKVO = ("q_proj", "k_proj", "v_proj", "out_proj")


def encoder_weights(pipe, family: str) -> list[str]:
    """Canonical names of every Linear weight in the encoders' layers: all a text-encoder LoRA can change."""
    return [
        f"{comp}.text_model.encoder.layers.{i}.{m}.weight"
        for comp in ENCODERS[family]
        for i in range(num_text_layers(getattr(pipe, comp)))
        for m in CLIP_LINEARS
    ]


def read_kohya(path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor, float | None]], dict[str, str]]:
    """{kohya module name: (up (d_out, r), down (r, d_in), alpha or None)} and the file's metadata."""
    with safe_open(str(path), framework="pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata() or {}
    modules = {}
    for name in {k.split(".", 1)[0] for k in sd}:
        alpha = sd.get(f"{name}.alpha")
        alpha = None if alpha is None else alpha.item()
        modules[name] = (sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"], alpha)
    return modules, metadata


def updown(module) -> torch.Tensor:
    """up @ down · alpha / rank in float64 (rank = lora_down rows); scale 1 without alpha."""
    up, down, alpha = module
    scale = 1.0 if alpha is None else alpha / down.shape[0]
    return up.double() @ down.double() * scale


# kohya sd-scripts: networks/lora.py. create_network_from_weights takes each module's dim from its
# lora_down and alpha from ".alpha" (missing: alpha = dim); LoRANetwork.create_modules names a LoRA per
# Linear inside CLIPAttention/CLIPMLP as prefix + "_" + module path with "_" for ".", prefix "lora_te"
# with one text encoder and "lora_te1"/"lora_te2" with two; LoRAModule: alpha 0 means dim; merge_to:
# W += multiplier · up @ down · alpha / dim. Its text encoders are transformers CLIP models (q, k, v,
# out_proj separate) for SD2 and SDXL's second encoder too.
def sd_scripts_deltas(modules, weights: list[str], family: str) -> dict[str, torch.Tensor]:
    out = {}
    for w in weights:
        component, _, rest = w.partition(".")
        prefix = ("lora_te1" if component == "text_encoder" else "lora_te2") if family == "sdxl" else "lora_te"
        name = f"{prefix}_{rest.removesuffix('.weight').replace('.', '_')}"
        if name in modules:
            up, down, alpha = modules[name]
            out[w] = updown((up, down, alpha or None))  # alpha missing or 0: alpha = dim, scale 1
    return out


# ComfyUI: comfy/lora.py model_lora_keys_clip maps "lora_te_"/"lora_te1_" keys to clip_l (SD1, SDXL's
# first encoder) or clip_h (SD2), and "lora_te2_" to clip_g when clip_l is present (SDXL), per layer and
# per Linear (mlp_fc1, mlp_fc2, self_attn_{q,k,v,out}_proj: ComfyUI's CLIP keeps them separate for all
# three); comfy/weight_adapter/lora.py LoRAAdapter.calculate_weight: W += strength · up @ down ·
# alpha / down.shape[0], scale 1 without alpha. Forge loads LoRAs with the same code
# (backend/patcher/lora.py -> packages_3rdparty/comfyui_lora_collection/lora.py).
def comfyui_deltas(modules, weights: list[str], family: str) -> dict[str, torch.Tensor]:
    clip = {"sd1": {"text_encoder": "clip_l"}, "sd2": {"text_encoder": "clip_h"}}.get(
        family, {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
    )
    prefixes = {"clip_l": ("lora_te", "lora_te1"), "clip_h": ("lora_te", "lora_te1"), "clip_g": ("lora_te2",)}
    out = {}
    for w in weights:
        component, _, rest = w.partition(".")
        layer, module = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.weight", rest).groups()
        for prefix in prefixes[clip[component]]:
            name = f"{prefix}_text_model_encoder_layers_{layer}_{module.replace('.', '_')}"
            if name in modules:
                out[w] = updown(modules[name])
    return out


# AUTOMATIC1111: extensions-builtin/Lora/networks.py. assign_network_names_to_compvis_modules names the
# layers of its own text-encoder modules: transformers CLIP under "transformer_text_model_..." (SD1;
# "0_" prefix for SDXL's first), open_clip under "model_transformer_resblocks_<i>_..." (SD2; "1_" prefix
# for SDXL's second), whose attention "attn" is one torch.nn.MultiheadAttention (in_proj_weight = q;k;v,
# its out_proj Linear inside) and whose MLP is c_fc/c_proj. convert_diffusers_name_to_compvis and
# load_network map kohya names onto those (q/k/v names resolve to the attention via re_x_proj);
# network.py NetworkModule.calc_scale: alpha / dim (dim = lora_down rows), 1 without alpha.
# network_apply_weights runs from the patched forward of Linear and MultiheadAttention: a Linear takes
# its own module; a MultiheadAttention takes q, k, v and out only when all four are present. The
# out_proj Linear inside a MultiheadAttention never runs its forward (MultiheadAttention reads
# out_proj.weight directly), so a lone out_proj entry of an open_clip encoder is dropped.
def _a1111_key(lora_name: str, is_sd2: bool, known: set[str]) -> str | None:
    key = lora_name
    te = re.fullmatch(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", lora_name)
    te2 = re.fullmatch(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", lora_name)
    if te and not is_sd2:
        key = f"transformer_text_model_encoder_layers_{te[1]}_{te[2]}"
    elif te or te2:
        layer, rest = (te or te2).groups()
        if "mlp_fc1" in rest:
            rest = rest.replace("mlp_fc1", "mlp_c_fc")
        elif "mlp_fc2" in rest:
            rest = rest.replace("mlp_fc2", "mlp_c_proj")
        else:
            rest = rest.replace("self_attn", "attn")
        key = f"{'' if te else '1_'}model_transformer_resblocks_{layer}_{rest}"
    if key in known:
        return key
    qkv = re.fullmatch(r"(.*)_([qkv]_proj)", key)
    if qkv and qkv[1] in known:
        return key
    if "lora_te1_text_model" in lora_name:
        for replacement in ("0_transformer_text_model", "transformer_text_model"):
            key = lora_name.replace("lora_te1_text_model", replacement)
            if key in known:
                return key
    return None


def a1111_deltas(modules, weights: list[str], family: str) -> dict[str, torch.Tensor]:
    linears, attentions, inner = {}, {}, set()  # A1111 layer name -> canonical weight / attention path
    for w in weights:
        component, _, rest = w.partition(".")
        layer, module = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.weight", rest).groups()
        tag = ("0_" if component == "text_encoder" else "1_") if family == "sdxl" else ""
        if component not in OPENCLIP[family]:
            linears[f"{tag}transformer_text_model_encoder_layers_{layer}_{module.replace('.', '_')}"] = w
        elif module.startswith("mlp."):
            linears[f"{tag}model_transformer_resblocks_{layer}_mlp_{'c_fc' if module == 'mlp.fc1' else 'c_proj'}"] = w
        else:
            attentions[f"{tag}model_transformer_resblocks_{layer}_attn"] = w.rpartition(".")[0].rpartition(".")[0]
            inner.add(f"{tag}model_transformer_resblocks_{layer}_attn_out_proj")
    known = set(linears) | set(attentions) | inner
    is_sd2 = family == "sd2"  # A1111: 'model_transformer_resblocks' in the layer mapping
    net = {}
    for name, module in modules.items():
        key = _a1111_key(name, is_sd2, known)
        if key is not None:
            net[key] = module
    out = {}
    for key, w in linears.items():
        if key in net:
            out[w] = updown(net[key])
    for attn, path in attentions.items():
        parts = [net.get(f"{attn}_{p}") for p in QKVO]
        if all(part is not None for part in parts):
            for p, part in zip(QKVO, parts):
                out[f"{path}.{p}.weight"] = updown(part)
    return out


CLIENTS = {"a1111": a1111_deltas, "comfyui": comfyui_deltas, "sd-scripts": sd_scripts_deltas}


def diffusers_deltas(pipe, path, weights: list[str]) -> dict[str, torch.Tensor]:
    """diffusers for real: load_lora_weights, then each peft layer's scaled delta (get_delta_weight)."""
    from peft.tuners.lora import LoraLayer

    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    out = {}
    for w in weights:
        component, _, rest = w.partition(".")
        module = resolve_text_module(getattr(pipe, component), rest.removesuffix(".weight"))
        if isinstance(module, LoraLayer):
            out[w] = sum(module.get_delta_weight(a).double() for a in module.active_adapters)
    return out


def assert_reproduces(client: str, deltas: dict[str, torch.Tensor], edit, weights: list[str]) -> None:
    for w in weights:
        got = deltas.get(w)
        if w not in edit.names:
            assert got is None or not got.any(), f"{client} changes {w}, which the edit leaves alone"
            continue
        assert got is not None, f"{client} drops the change of {w}"
        want = edit.delta(w)
        err = ((got - want).norm() / want.norm()).item()
        print(f"{client} {w}: relative error {err:.1e}")
        assert err <= 1e-5, f"{client} applies {w} with relative error {err:.2e}"


@pytest.fixture(params=["attn_v", "attn_out"])
def edited(load_tiny, family, tmp_path, request):
    pipe = load_tiny(family)
    edit = quickfix(pipe, [("van gogh", "painting")], module=request.param)
    path = tmp_path / "lora.safetensors"
    edit.to_lora(path, format="kohya")
    return pipe, edit, path


@pytest.mark.parametrize("client", [*CLIENTS, "diffusers"])
def test_every_client_applies_the_whole_edit(edited, family, load_tiny, client):
    pipe, edit, path = edited
    weights = encoder_weights(pipe, family)
    assert set(edit.names) <= set(weights)
    if client == "diffusers":
        deltas = diffusers_deltas(load_tiny(family), path, weights)
    else:
        deltas = CLIENTS[client](read_kohya(path)[0], weights, family)
    assert_reproduces(client, deltas, edit, weights)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_a1111_drops_openclip_projections_without_companions(edited, family):
    pipe, edit, path = edited
    weights = encoder_weights(pipe, family)
    modules, _ = read_kohya(path)
    edited_proj = edit.names[0].rpartition(".self_attn.")[2].removesuffix(".weight")  # "v_proj" or "out_proj"
    companions = {n for n, (up, down, _) in modules.items() if not up.any() and not down.any()}
    assert companions, "no zero companions written"
    for name in companions:
        up, down, alpha = modules[name]
        real_up, real_down, real_alpha = modules[re.sub(r"(q|k|v|out)_proj$", edited_proj, name)]
        assert down.shape == real_down.shape and up.shape == real_up.shape and alpha == real_alpha  # rank, alpha
    bare = {n: m for n, m in modules.items() if n not in companions}
    openclip = [n for n in edit.names if n.partition(".")[0] in OPENCLIP[family]]
    assert openclip and all(n not in a1111_deltas(bare, weights, family) for n in openclip)
    assert all(n in comfyui_deltas(bare, weights, family) for n in openclip)  # only A1111 needs them
    assert all(n in a1111_deltas(modules, weights, family) for n in openclip)


def a1111_sd_version(metadata: dict[str, str]) -> str:
    """AUTOMATIC1111's extensions-builtin/Lora/network.py NetworkOnDisk.detect_version (Forge's adds
    modelspec.architecture checks before the same ones); ui_extra_networks_lora.py hides a LoRA whose
    version is not the checkpoint's."""
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    if str(metadata.get("ss_v2", "")) == "True":
        return "SD2"
    return "SD1" if len(metadata) else "Unknown"


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_metadata_files_the_lora_under_its_model_version(load_tiny, family, tmp_path, fmt):
    edit = quickfix(load_tiny(family), [("van gogh", "painting")], corpus_weight=0, corpus_keys=0)
    path = tmp_path / "lora.safetensors"
    edit.to_lora(path, format=fmt)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    # kohya sd-scripts' values: library/model_util.py get_model_version_str_for_sd1_sd2,
    # library/sdxl_model_util.py MODEL_VERSION_SDXL_BASE_V1_0; train_network.py writes ss_v2 = str(bool).
    assert metadata["ss_base_model_version"] == {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}[family]
    assert metadata["ss_v2"] == str(family == "sd2")
    assert a1111_sd_version(metadata) == {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}[family]
