"""`locedit report RUNDIR`: heatmaps from the store (UNet by attribute and prompt; text encoder
tokens × layers with subject tokens marked); flagged prompts stay out of averages."""

from __future__ import annotations

import json

from locedit.cli import main
from locedit.report import text_grid, unet_table


def _probes(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a red cat", "subject": "cat", "attribute": "object"}) + "\n")
    return path


def test_unet_and_text_reports(tiny_dirs, tmp_path, capsys):
    probes = _probes(tmp_path)
    common = ["--probes", str(probes), "--steps", "2", "--guidance", "5", "--quiet", "--min-drop", "0"]
    assert main(["trace", str(tiny_dirs["sd1"]), *common, "--layers", "block", "--out", str(tmp_path / "u")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "u")]) == 0
    *written, summary = capsys.readouterr().out.splitlines()
    assert {p.rsplit("/", 1)[-1] for p in written} == {"unet_by_attribute.png", "unet_by_prompt.png"}
    assert summary == f"report: 2 heatmap(s) in {tmp_path / 'u' / 'report'}"
    assert all((tmp_path / "u" / "report" / n).stat().st_size > 1000 for n in ("unet_by_attribute.png",))
    assert (
        main(
            [
                "trace",
                str(tiny_dirs["sd1"]),
                *common,
                "--component",
                "text-encoder",
                "--layers",
                "attn",
                "--batch",
                "32",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert main(["report", str(tmp_path / "t"), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "text_P0000_text_encoder_attn.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "text_summary_text_encoder_attn.png").stat().st_size > 1000


def test_report_of_missing_run_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a trace run" in capsys.readouterr().err


def _row(pi, layer, attribute, effect, destroyed, component="unet", token="", state="attn2", encoder=""):
    return {
        "prompt_index": str(pi),
        "prompt": f"p{pi}",
        "attribute": attribute,
        "layer": layer,
        "component": component,
        "effect": str(effect),
        "destroyed": destroyed,
        "token": token,
        "state": state,
        "encoder": encoder,
    }


def test_flagged_prompts_are_left_out_of_averages():
    rows = [_row(0, "a", "style", 1.0, "1"), _row(1, "a", "style", 0.0, "0"), _row(2, "a", "color", 0.5, "1")]
    layers, cols, grid, filtered = unet_table(rows, "attribute")
    assert filtered and layers == ["a"] and cols == ["style", "color"] and grid == [[1.0, 0.5]]
    layers, cols, grid, _ = unet_table(rows, "prompt")
    assert len(cols) == 3  # by prompt every prompt is shown (flagged ones are labelled)


def test_text_grid_tokens_by_layers():
    rows = [
        _row(0, str(layer), "object", layer + 10 * t, "1", "text-encoder", str(t), "mlp", "text_encoder")
        for t in range(3)
        for layer in range(2)
    ]
    assert text_grid(rows, 0, "text_encoder", "mlp") == [[0.0, 1.0], [10.0, 11.0], [20.0, 21.0]]


def test_token_categories_rome_style():
    from locedit.report import token_categories

    # BOS a photo of van gogh , x EOS: subject "van gogh" at [4, 6), 9 tokens.
    cats = token_categories(9, 4, 6)
    assert cats["first subject"] == [4] and cats["last subject"] == [5] and cats["middle subject"] == []
    assert cats["first subsequent"] == [6] and cats["further tokens"] == [7] and cats["last token"] == [8]
    assert token_categories(5, 3, 4)["first subject"] == token_categories(5, 3, 4)["last subject"] == [3]
    assert cats["padding"] == [] and token_categories(9, 4, 6, padding=True)["padding"] == [9]
