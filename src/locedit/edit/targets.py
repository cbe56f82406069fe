"""Addresses of editable weights in a pipeline, lookup by canonical name, and base fingerprints.

A canonical name is "<pipeline attribute>.<module path>.<parameter>". Text-encoder paths are the
transformers-4.x ones, e.g. "text_encoder.text_model.encoder.layers.0.self_attn.out_proj.weight",
so an edit made under transformers 5.x applies under 4.x and the other way round. UNet paths are
diffusers' module paths, e.g. "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from locedit.errors import InvalidInputError
from locedit.models import detect_family, resolve_text_module, text_encoders, text_template


@dataclass(frozen=True)
class Target:
    """One editable weight: a projection (out_proj or v_proj) of a text encoder's self-attention."""

    component: str  # pipeline attribute, "text_encoder" or "text_encoder_2"
    module_path: str  # canonical module path inside the component
    encoder_index: int  # 0-based, as the CLI's --encoder and TextEncoderHandle.index

    @property
    def name(self) -> str:
        return f"{self.component}.{self.module_path}.weight"


def text_target(kind: str, component: str, encoder_index: int, layer: int = 0) -> Target:
    """The weight of module `kind` ("attn_out" or "attn_v", see TEXT_TEMPLATES) at `layer`."""
    return Target(component, text_template(kind, layer=layer), encoder_index)


def editable_targets(pipe, encoder: str | int | None = None, layer: int = 0, kind: str = "attn_out") -> list[Target]:
    """The DIFF-QUICKFIX targets of a pipeline: layer `layer`'s self-attention projection per encoder."""
    return [text_target(kind, h.name, h.index, layer) for h in text_encoders(pipe, encoder)]


UNET = "unet"


def unet_name(module_path: str, param: str = "weight") -> str:
    """Canonical name of parameter `param` of UNet module `module_path`."""
    return f"{UNET}.{module_path}.{param}"


def cross_attention_projections(unet: torch.nn.Module, projections: tuple[str, ...] = ("to_k", "to_v")) -> list[str]:
    """Module paths of the UNet's cross-attention (attn2) projections named in `projections`, in module order.

    to_k and to_v read the text embeddings: their input dimension is the cross-attention dimension.
    """
    out = []
    for path, _ in unet.named_modules():
        parent, _, leaf = path.rpartition(".")
        if leaf in projections and parent.rpartition(".")[2] == "attn2":
            out.append(path)
    return out


def get_parameter(pipe, name: str) -> torch.nn.Parameter:
    """The parameter at canonical `name` (see module docstring)."""
    component, _, rest = name.partition(".")
    module_path, _, param = rest.rpartition(".")
    detect_family(pipe)
    owner = getattr(pipe, component, None)
    if owner is None or not module_path:
        raise InvalidInputError(f"pipeline {type(pipe).__name__} has no component for edited weight {name!r}")
    if component == UNET:
        try:
            module = owner.get_submodule(module_path)
        except AttributeError:
            raise InvalidInputError(
                f"this pipeline's UNet has no module {module_path!r} (edited weight {name!r}): "
                "the edit was made for another model"
            ) from None
    else:
        module = resolve_text_module(owner, module_path)
    try:
        return getattr(module, param)
    except AttributeError:
        raise InvalidInputError(f"module {module_path!r} of {component} has no parameter {param!r}") from None


def tensor_digest(name: str, tensor: torch.Tensor, h: hashlib._Hash) -> None:
    """Feed `name`, shape and the float32 bytes of `tensor` into hash `h`.

    Hashing the float32 value makes a float16 base and the same base loaded as float32 agree.
    """
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    h.update(name.encode())
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())


def fingerprint_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the named tensors (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor_digest(name, tensors[name], h)
    return h.hexdigest()


def fingerprint(pipe, names: list[str]) -> str:
    """sha256 of the pipeline's current tensors at canonical `names`."""
    return fingerprint_tensors({n: get_parameter(pipe, n) for n in names})
