"""`evaluate`: one call from (pipeline, edit, suite, judge) to an EvalReport, with the checks a user
needs: the edit fits the model, the suite fits the judge, and the suite shares no caption with
what the edit was fitted on."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from locedit.evaluate.edit_eval import EvalReport, EvalSettings, evaluate_edit
from locedit.evaluate.judges import Judge, make_judge
from locedit.evaluate.suite import SUITES, EvalItem, SuiteError, SuiteSettings, make_suite, overlap, read_suite


def check_edit_fits(pipe, edit) -> None:
    """Raise FingerprintMismatchError (a ValueError) when `edit` was made on other weights than `pipe`'s."""
    from locedit.edit.edit import FingerprintMismatchError
    from locedit.edit.targets import fingerprint

    edit._params(pipe)  # shapes and names: "made for another model"
    if fingerprint(pipe, edit.names) != edit.fingerprint:
        raise FingerprintMismatchError(
            "the edit was made on other weights than this model's (fingerprint mismatch); "
            "evaluate it on the model it was made for"
        )


def evaluate(
    pipe,
    edit,
    suite: str | Path | Sequence[EvalItem] = "builtin",
    judge: str | Judge = "builtin",
    settings: EvalSettings | None = None,
    suite_settings: SuiteSettings | None = None,
    allow_overlap: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[EvalReport, dict]:
    """Judge `edit` on `pipe` (left as it was).

    Args:
        suite: a generated suite's name ("builtin": drawn from the shapes world for the edit's pair),
            a JSONL file, or items.
        judge: "builtin", "clip:PATH" (or another registered judge spec) or a Judge.
        suite_settings: how a generated suite is drawn (items per group, seed, test/dev split).
        allow_overlap: evaluate even when suite prompts are captions the edit was fitted on
            (the rates are then partly in-sample); otherwise that is a SuiteError.

    Returns:
        (report, info): info holds the suite's source, the overlap with the fit captions (prompts),
        and whether the edit recorded its fit captions at all.
    """
    check_edit_fits(pipe, edit)
    if isinstance(suite, (str, Path)) and str(suite) in SUITES:
        suite_settings = suite_settings or SuiteSettings()
        items = make_suite(str(suite), edit, suite_settings, pipe=pipe)
        source = f"{suite} ({suite_settings.split} split)"
    elif isinstance(suite, (str, Path)):
        items, source = read_suite(suite), str(suite)
    else:
        items, source = list(suite), "given"
    judge = make_judge(judge) if isinstance(judge, str) else judge
    fit = edit.meta.get("fit_captions")
    if fit is None:
        warnings.warn(
            "the edit records no fit captions (made by an older locedit): overlap with the suite is unchecked",
            stacklevel=2,
        )
    shared = overlap(items, fit or ())
    if shared and not allow_overlap:
        raise SuiteError(
            f"{len(shared)} suite prompt(s) are captions the edit was fitted on (e.g. {shared[0]!r}); "
            "rates on them are in-sample: remove them from the suite, or pass --allow-overlap to evaluate anyway"
        )
    report = evaluate_edit(pipe, edit, items, judge, settings, progress=progress)
    info = {"suite": source, "judge": judge.name, "overlap": shared, "fit_captions_recorded": fit is not None}
    return report, info
