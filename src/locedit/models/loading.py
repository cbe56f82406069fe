"""Loading a pipeline from a local diffusers folder or a built-in model, offline; device and dtype parsing."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from locedit.errors import InvalidInputError, LoceditError
from locedit.models.families import _SUPPORTED_PIPELINES, UnsupportedModelError, detect_family

BUILTIN_PREFIX = "builtin:"
# The built-in models ship inside the installed package (locedit/builtin/, which also holds their
# world, classifier and training code); found by path here, so that loading never imports them.
_BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"
#: built-in model name -> folder loadable by ``diffusers.StableDiffusionPipeline.from_pretrained``.
BUILTIN_MODELS: dict[str, Path] = {"shapes": _BUILTIN_DIR / "shapes", "scenes": _BUILTIN_DIR / "scenes"}
DEFAULT_DEVICE = "cpu"  # where pipelines load unless told (CLI --device): CPU works everywhere; "auto" picks CUDA
DEFAULT_DTYPE = "float32"  # weight dtype unless told (CLI --dtype): full precision, as the edits are solved in

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ModelNotFoundError(LoceditError, FileNotFoundError):
    """The model spec names no local diffusers pipeline."""


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """torch dtype from a name such as "float16"/"fp16" (or a dtype, returned as is)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise InvalidInputError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device; None or "auto" picks CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InvalidInputError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    return resolved


def builtin_path(name: str) -> Path:
    """Folder of the built-in model ``name`` (a leading ``builtin:`` is accepted).

    Raises InvalidInputError naming the available models for an unknown name, or how to build a known
    one whose weights are not in this installation.
    """
    key = name.removeprefix(BUILTIN_PREFIX)
    if key not in BUILTIN_MODELS:
        raise InvalidInputError(f"unknown built-in model {name!r}; available: {', '.join(sorted(BUILTIN_MODELS))}")
    folder = BUILTIN_MODELS[key]
    if not (folder / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"built-in model {key!r} is not in this installation ({folder} has no weights); build it with "
            f"`python -m locedit.builtin.train --model {key} --out CHECKPOINTS` and "
            f"`... --stage assemble --export {folder}`, or use builtin:shapes"
        )
    return folder


def resolve_model_path(spec: str | Path) -> Path:
    """Folder of a diffusers pipeline named by `spec` (a path or `builtin:NAME`), checked."""
    spec_str = str(spec)
    if spec_str.startswith(BUILTIN_PREFIX):
        return builtin_path(spec_str)
    path = Path(spec_str).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"model path {spec_str!r} does not exist; give a local diffusers pipeline folder "
            f"(with model_index.json) or a built-in model such as builtin:shapes"
        )
    if not path.is_dir() or not (path / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{spec_str!r} is not a diffusers pipeline folder (no model_index.json); "
            "save one with pipe.save_pretrained(folder), or convert a single-file checkpoint with "
            "StableDiffusionPipeline.from_single_file(...).save_pretrained(folder)"
        )
    index = json.loads((path / "model_index.json").read_text())
    cls = index.get("_class_name")
    if cls not in _SUPPORTED_PIPELINES:
        raise UnsupportedModelError(
            f"{spec_str!r} holds a {cls} pipeline; locedit supports {', '.join(sorted(_SUPPORTED_PIPELINES))}"
        )
    return path


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """diffusers renamed from_pretrained's `torch_dtype` to `dtype`; pass the name this version reads."""
    from diffusers.utils import deprecation_utils

    name = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    return {name: dtype}


@contextmanager
def hf_progress_bars(enabled: bool):
    """Switch diffusers' and transformers' own progress bars (loading, saving) on or off for a block."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    (dlog.enable_progress_bar if enabled else dlog.disable_progress_bar)()
    (tlog.enable_progress_bar if enabled else tlog.disable_progress_bar)()
    try:
        yield
    finally:
        (dlog.enable_progress_bar if was[0] else dlog.disable_progress_bar)()
        (tlog.enable_progress_bar if was[1] else tlog.disable_progress_bar)()


def load_pipeline(
    spec: str | Path,
    device: str | torch.device | None = DEFAULT_DEVICE,
    dtype: str | torch.dtype = DEFAULT_DTYPE,
    progress: bool = False,
):
    """Load a Stable Diffusion pipeline from local files only (never the network).

    Args:
        spec: a local diffusers pipeline folder (containing model_index.json) or `builtin:NAME`.
        device: where to put the pipeline ("cpu", "cuda", "auto", ...).
        dtype: weight dtype (torch dtype or "float32"/"float16"/"bfloat16").
        progress: show diffusers' and transformers' loading progress bars.

    Returns:
        The diffusers pipeline, with its progress bar off; `detect_family(pipe)` tells its family.
    """
    from diffusers import DiffusionPipeline

    path = resolve_model_path(spec)
    torch_dtype = parse_dtype(dtype)
    target = resolve_device(device)
    with hf_progress_bars(progress):
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, **_dtype_kwarg(torch_dtype))
    detect_family(pipe)
    pipe.to(target)
    pipe.set_progress_bar_config(disable=True)
    return pipe
