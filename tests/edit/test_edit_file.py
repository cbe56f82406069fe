"""The Edit record: apply/revert bitwise, fingerprints, composition, files, every family."""

from __future__ import annotations

import pytest
import torch

from locedit import Edit, quickfix
from locedit.edit import EditFileError, FingerprintMismatchError
from locedit.edit.targets import get_parameter


def text_state(pipe) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("text_encoder", "text_encoder_2"):
        enc = getattr(pipe, name, None)
        if enc is not None:
            out.update({f"{name}.{k}": v.clone() for k, v in enc.state_dict().items()})
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_family_edits_saves_applies_reverts(load_tiny, family, tmp_path):
    pipe = load_tiny(family)
    base = text_state(pipe)
    edit = quickfix(pipe, [("van gogh", "painting")], preserve=["monet"])
    assert len(edit.names) == (2 if family == "sdxl" else 1)
    path = edit.save(tmp_path / "edit.safetensors")
    assert path.stat().st_size < 5 * 2**20
    loaded = Edit.load(path)
    assert loaded.meta == edit.meta
    assert all(torch.equal(loaded.after[n], edit.after[n]) for n in edit.names)

    other = load_tiny(family)
    loaded.apply(other)
    for name in edit.names:
        assert torch.equal(get_parameter(other, name).detach(), edit.after[name])
    changed = [k for k, v in text_state(other).items() if not torch.equal(v, base[k])]
    assert len(changed) == len(edit.names)  # only the edited v_proj weights (the default module) differ
    assert all(k.endswith("encoder.layers.0.self_attn.v_proj.weight") for k in changed)
    loaded.revert(other)
    assert_same(text_state(other), base)


def test_revert_is_bitwise_and_generation_returns(load_tiny):
    pipe = load_tiny("sd1")

    def gen():
        return pipe(
            "a photo of van gogh",
            num_inference_steps=2,
            height=16,
            width=16,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images

    before_img, before = gen(), text_state(pipe)
    edit = quickfix(pipe, [("van gogh", "painting")]).apply(pipe)
    assert not (gen() == before_img).all()
    edit.revert(pipe)
    assert_same(text_state(pipe), before)
    assert (gen() == before_img).all()


def test_fingerprint_mismatch_is_refused_unless_forced(load_tiny):
    pipe = load_tiny("sd1")
    edit = quickfix(pipe, [("van gogh", "painting")])
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings()  # untouched weights don't matter
        param = get_parameter(pipe, edit.names[0])
        param.add_(1e-3)
    modified = param.detach().clone()
    with pytest.raises(FingerprintMismatchError, match="fingerprint"):
        edit.apply(pipe)
    assert torch.equal(param.detach(), modified)  # nothing changed
    edit.apply(pipe, force=True)
    edit.revert(pipe)
    assert torch.equal(param.detach(), modified)  # a forced apply reverts to what it replaced


def test_edits_compose_and_revert_in_reverse_order(load_tiny):
    pipe = load_tiny("sd1")
    base = text_state(pipe)
    first = quickfix(pipe, [("van gogh", "painting")]).apply(pipe)
    after_first = text_state(pipe)
    second = quickfix(pipe, [("mickey mouse", "mouse")])
    with pytest.raises(FingerprintMismatchError):
        second.apply(load_tiny("sd1"))  # made on the first edit's result, not on the base
    second.apply(pipe)
    with pytest.raises(ValueError, match="reverse order"):
        first.revert(pipe)
    second.revert(pipe)
    assert_same(text_state(pipe), after_first)
    first.revert(pipe)
    assert_same(text_state(pipe), base)


def test_edit_in_half_precision_pipeline(load_tiny):
    pipe = load_tiny("sd1").to(dtype=torch.float16)
    base = text_state(pipe)
    edit = quickfix(pipe, [("van gogh", "painting")])
    assert edit.after[edit.names[0]].dtype == torch.float16
    edit.apply(pipe).revert(pipe)
    assert_same(text_state(pipe), base)


def test_load_refuses_files_that_are_not_edits(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError):
        Edit.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EditFileError, match="not a safetensors"):
        Edit.load(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(EditFileError, match="not a locedit edit"):
        Edit.load(tmp_path / "other.safetensors")
