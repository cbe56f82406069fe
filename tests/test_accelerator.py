"""The same identities on an accelerator: trace bitwise identities and run-to-run determinism in
float32 and float16, DIFF-QUICKFIX in half precision against float32, apply/revert bitwise across
devices, a fine-tuning baseline on a half-precision pipeline, and the built-in model's default edit
judged in float16 against float32.

Marked `gpu`: they run on LOCEDIT_TEST_DEVICE (default "cuda") and are skipped where that device is
missing. LOCEDIT_TEST_DEVICE=cpu runs them on the CPU (a check of the tests themselves).
"""

from __future__ import annotations

import os

import pytest
import torch

from locedit import Edit, load_pipeline, quickfix
from locedit.edit.targets import get_parameter
from locedit.probes import Probe
from locedit.scorers import PixelScorer
from locedit.trace import GenerationSettings, Tracer, TraceSettings, UNetCell

DEVICE = os.environ.get("LOCEDIT_TEST_DEVICE", "cuda")


def _available(device: str) -> bool:
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return kind == "cpu"


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _available(DEVICE), reason=f"no {DEVICE} device (set LOCEDIT_TEST_DEVICE to another)"),
]
DTYPES = {"float32": torch.float32, "float16": torch.float16}
PROBE = Probe("a photo of a red cat", "cat", "object")


@pytest.fixture
def load_on(tiny_dirs):
    """load_on(family, dtype) -> a tiny pipeline on the accelerator, loaded like a user's folder."""
    return lambda family, dtype=torch.float32: load_pipeline(tiny_dirs[family], device=DEVICE, dtype=dtype)


def _text_state(pipe) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in pipe.text_encoder.state_dict().items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_trace_identities_are_bitwise_and_runs_repeat(load_on, family, dtype):
    """Restoring every block reproduces the clean row bitwise and restoring none the corrupted one
    (same batch, same kernels per row), and a second run gives the same images bitwise."""
    tracer = Tracer(
        load_on(family, DTYPES[dtype]), PixelScorer(), GenerationSettings(steps=2, guidance=5.0), TraceSettings()
    )
    blocks = tuple(layer.name for layer in tracer.layers if layer.kind == "block")
    cells = [UNetCell("all", "set", blocks), UNetCell("none", "set", ())]
    first = tracer.run_unet_unit(PROBE, 0, 3.0, cells)
    images = first.images
    assert images.device.type == "cpu"  # (2 + cells, 3, H, W) in [0, 1], moved off the device
    assert torch.isfinite(images).all()
    assert not torch.equal(images[0], images[1]), "corruption must change the image for this test to mean anything"
    assert torch.equal(images[2], images[0])
    assert torch.equal(images[3], images[1])
    again = tracer.run_unet_unit(PROBE, 0, 3.0, cells)
    assert torch.equal(again.images, images), "two runs of the same trace differ on this device"
    assert (again.clean, again.corrupted, again.restored) == (first.clean, first.corrupted, first.restored)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quickfix_on_the_accelerator_matches_float32_on_the_cpu(dtype, tmp_path):
    """The built-in model's edit made on the accelerator equals the CPU float32 edit (float32: ΔW to
    rounding; float16: within 3% relative, as on the CPU: 0.3-1.1%), is stored on the CPU in the
    pipeline's dtype, reverts bitwise, and its file applies to a CPU pipeline of the same dtype."""
    pair = [("veloria", "norland")]
    reference = quickfix(load_pipeline("builtin:shapes"), pair)
    pipe = load_pipeline("builtin:shapes", device=DEVICE, dtype=DTYPES[dtype])
    base = _text_state(pipe)
    edit = quickfix(pipe, pair)
    name = edit.names[0]
    assert edit.after[name].device.type == "cpu" and edit.after[name].dtype == DTYPES[dtype]
    rel = ((edit.delta(name) - reference.delta(name)).norm() / reference.delta(name).norm()).item()
    print(f"{dtype} on {DEVICE}: relative difference of ΔW from CPU float32 {rel:.2e}")
    assert rel < (1e-4 if dtype == "float32" else 3e-2)
    edit.apply(pipe)
    assert torch.equal(get_parameter(pipe, name).detach().cpu(), edit.after[name])
    edit.revert(pipe)
    assert all(torch.equal(v, base[k]) for k, v in _text_state(pipe).items())
    # across devices: the file made on the accelerator applies to a CPU pipeline with the same weights
    loaded = Edit.load(edit.save(tmp_path / "edit.safetensors"))
    cpu_pipe = load_pipeline("builtin:shapes", dtype=DTYPES[dtype])
    cpu_base = _text_state(cpu_pipe)
    loaded.apply(cpu_pipe)
    assert torch.equal(get_parameter(cpu_pipe, name).detach(), edit.after[name])
    loaded.revert(cpu_pipe)
    assert all(torch.equal(v, cpu_base[k]) for k, v in _text_state(cpu_pipe).items())


def test_esd_trains_on_a_half_precision_pipeline(load_on):
    """ESD-x on a float16 pipeline on the accelerator: finite losses that go down on a fixed seed, an
    Edit in float16 that applies and reverts bitwise."""
    from locedit.edit.esd import esd

    pipe = load_on("sd1", torch.float16)
    unet = {k: v.detach().cpu().clone() for k, v in pipe.unet.state_dict().items()}
    edit = esd(pipe, "van gogh", "x", steps=30, lr=1e-3, seed=0, progress=False)
    losses = edit.meta["stats"]["loss"]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert edit.meta["stats"]["loss_last"] < edit.meta["stats"]["loss_first"]
    assert all(t.dtype == torch.float16 for t in edit.after.values())
    assert all(torch.equal(v.cpu(), unet[k]) for k, v in pipe.unet.state_dict().items()), (
        "esd() must leave pipe untouched"
    )
    edit.apply(pipe).revert(pipe)
    assert all(torch.equal(v.cpu(), unet[k]) for k, v in pipe.unet.state_dict().items())


@pytest.mark.slow
def test_builtin_default_edit_in_float16_judges_like_float32():
    """The built-in model's default edit (striped -> plain) made and judged in float16 on the
    accelerator: every rate of the held-out test suite (16 prompts per group) within 2 prompts of the
    float32 run on the same device, and the targets of the default edit (removed >= 0.90, every
    specificity group kept >= 0.85) met in both."""
    from locedit import eval_edit
    from locedit.evaluate.edit_eval import EvalSettings
    from locedit.evaluate.suite import SuiteSettings

    rates = {}
    for dtype in DTYPES:
        pipe = load_pipeline("builtin:shapes", device=DEVICE, dtype=dtype)
        edit = quickfix(pipe, [("striped", "plain")])
        report, info = eval_edit(
            pipe, edit, "builtin", "builtin", EvalSettings(null=False), SuiteSettings(per_group=16, split="test")
        )
        assert info["overlap"] == []
        rates[dtype] = {f"{g}.{m}": (r.rate, r.n) for (g, m), r in report.rates["after"].items() if r.n}
        print(f"{dtype} on {DEVICE}: {rates[dtype]}")
    assert rates["float16"].keys() == rates["float32"].keys()
    for group, (rate, n) in rates["float16"].items():
        assert abs(rate - rates["float32"][group][0]) * n <= 2 + 1e-9, (group, rate, rates["float32"][group])
    for which in rates.values():
        assert which["efficacy.removed"][0] >= 0.90
        assert all(
            rate >= 0.85
            for g, (rate, _) in which.items()
            if g.split(".")[0] in ("neighbours", "attributes", "entities")
        )
