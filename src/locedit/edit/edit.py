"""The Edit record: edited tensors before/after with their settings; apply, revert, save, load.

An edit file is one safetensors file: tensors "before/<name>" and "after/<name>" (name = canonical
weight name, see targets.py) and the settings as JSON under the metadata key "locedit.edit".
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from locedit._version import __version__
from locedit.edit.targets import fingerprint, get_parameter
from locedit.errors import InvalidInputError, LoceditError
from locedit.io import atomic_path

META_KEY = "locedit.edit"


class FingerprintMismatchError(LoceditError, ValueError):
    """The pipeline's weights are not the ones the edit was computed on."""


class EditFileError(LoceditError, ValueError):
    """A file that is not a readable locedit edit."""


class Edit:
    """A closed-form weight edit of a pipeline.

    Attributes:
        before: {canonical weight name: tensor before the edit} (CPU, the model's dtype).
        after: {canonical weight name: tensor after the edit}.
        meta: settings and provenance (method, pairs, preserve, templates, lam, positions, layer,
            fingerprint of the base tensors, statistics, locedit version).
    """

    def __init__(self, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], meta: dict):
        if set(before) != set(after):
            raise InvalidInputError("an edit needs the same weight names before and after")
        self.before = before
        self.after = after
        self.meta = dict(meta)
        self.meta.setdefault("locedit_version", __version__)
        self._replaced: dict[str, torch.Tensor] | None = None  # what a forced apply overwrote

    @property
    def names(self) -> list[str]:
        return sorted(self.after)

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def delta(self, name: str) -> torch.Tensor:
        """ΔW = after − before in float64, (d_out, d_in)."""
        return self.after[name].double() - self.before[name].double()

    def _params(self, pipe) -> dict[str, torch.nn.Parameter]:
        params = {}
        for name in self.names:
            p = get_parameter(pipe, name)
            if tuple(p.shape) != tuple(self.after[name].shape):
                raise FingerprintMismatchError(
                    f"weight {name} has shape {tuple(p.shape)} in this pipeline but "
                    f"{tuple(self.after[name].shape)} in the edit: it was made for another model"
                )
            params[name] = p
        return params

    @torch.no_grad()
    def apply(self, pipe, force: bool = False) -> Edit:
        """Write the edited tensors into `pipe` (in place, in the pipeline's dtype and device).

        Refuses a pipeline whose tensors differ from the edit's base (fingerprint mismatch) unless
        `force=True`; a forced apply remembers what it overwrote, so revert still restores it.
        """
        params = self._params(pipe)
        current = fingerprint(pipe, self.names)
        if current != self.fingerprint and not force:
            raise FingerprintMismatchError(
                f"this pipeline's weights (fingerprint {current[:12]}) are not the ones the edit was made on "
                f"({self.fingerprint[:12]}); load the base model it was made for, apply earlier edits first, "
                "or pass force=True (CLI: --force) to apply it anyway"
            )
        self._replaced = (
            {n: p.detach().to("cpu", copy=True) for n, p in params.items()} if current != self.fingerprint else None
        )
        for name, p in params.items():
            p.copy_(self.after[name].to(device=p.device, dtype=p.dtype))
        return self

    @torch.no_grad()
    def revert(self, pipe) -> Edit:
        """Restore the weights the edit replaced, bitwise. Edits must be reverted in reverse order."""
        params = self._params(pipe)
        for name, p in params.items():
            if not torch.equal(p.detach().cpu(), self.after[name].to(p.dtype)):
                raise InvalidInputError(
                    f"weight {name} is not this edit's result, so reverting would lose other changes; "
                    "revert later edits first (in reverse order of applying)"
                )
        source = self._replaced or self.before
        for name, p in params.items():
            p.copy_(source[name].to(device=p.device, dtype=p.dtype))
        self._replaced = None
        return self

    def save(self, path: str | Path) -> Path:
        """Write the edit as one safetensors file (atomically)."""
        tensors = {}
        for name in self.names:
            tensors[f"before/{name}"] = self.before[name].contiguous()
            tensors[f"after/{name}"] = self.after[name].contiguous()
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(self.meta, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Edit:
        """Read an edit file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"edit file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = (f.metadata() or {}).get(META_KEY)
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise EditFileError(f"{str(path)!r} is not a safetensors file ({err})") from None
        if meta is None:
            raise EditFileError(
                f"{str(path)!r} is a safetensors file but not a locedit edit (no {META_KEY!r} metadata)"
            )
        before = {k.removeprefix("before/"): v for k, v in tensors.items() if k.startswith("before/")}
        after = {k.removeprefix("after/"): v for k, v in tensors.items() if k.startswith("after/")}
        return cls(before, after, json.loads(meta))

    def to_lora(self, path: str | Path, format: str | None = None, rank: int | None = None) -> dict:
        """Export ΔW as a LoRA file (format None: lora.DEFAULT_LORA_FORMAT); see locedit.edit.lora.export_lora."""
        from locedit.edit.lora import DEFAULT_LORA_FORMAT, export_lora

        return export_lora(self, path, format=format or DEFAULT_LORA_FORMAT, rank=rank)

    def summary(self) -> str:
        m = self.meta
        pairs = ", ".join(f"{k!r} -> {'(removed)' if v is None else repr(v)}" for k, v in m.get("pairs", []))
        lines = [f"{m.get('method', 'edit')}: {pairs}"]
        if m.get("preserve"):
            lines.append(f"  preserve:  {', '.join(m['preserve'])}")
        if "settings" in m:  # the baselines (esd, ablate, uce) keep their settings under one key
            return "\n".join(lines + self._baseline_summary())
        lines.append(
            f"  settings:  module={m.get('module', 'attn_out')} lam={m.get('lam')} positions={m.get('positions')} "
            f"layer={m.get('layer')} "
            f"templates={len(m.get('templates', []))}"
        )
        if m.get("corpus_source"):
            lines.append(f"  corpus:    mu={m.get('corpus_weight')} from {m['corpus_source']}")
        for name, st in m.get("stats", {}).items():
            lines.append(
                f"  {name}: {st['key_rows']} key rows, {st['preserve_rows']} preserve rows, "
                f"{st.get('mined_captions', 0)} key captions mined from the corpus, "
                f"{st.get('corpus_captions', 0)} corpus captions in the corpus term, "
                f"relative error mean {st['rel_error_mean']:.3g} max {st['rel_error_max']:.3g}"
            )
        return "\n".join(lines)

    def _baseline_summary(self) -> list[str]:
        m, st = self.meta, self.meta.get("stats", {})
        hidden = {"templates"}
        if m.get("method") == "locoedit":  # LocoEditSettings.neurons is read only by locoedit-neurons
            hidden.add("neurons")
        settings = " ".join(f"{k}={v}" for k, v in m["settings"].items() if k not in hidden)
        lines = [f"  settings:  {settings}", f"  weights:   {len(self.names)} tensors changed"]
        if st.get("loss"):
            lines.append(
                f"  loss:      {st['loss_first']:.4g} -> {st['loss_last']:.4g} (means of the first and last "
                f"{st['loss_window']} of {len(st['loss'])} steps)"
            )
        if "key_rows" in st:
            lines.append(
                f"  fit:       {st['key_rows']} key rows, {st['preserve_rows']} preserve rows, relative error "
                f"mean {st['rel_error_mean']:.3g} max {st['rel_error_max']:.3g}"
            )
        return lines

    def __repr__(self) -> str:
        return f"Edit({self.meta.get('method')}, pairs={self.meta.get('pairs')}, weights={self.names})"
