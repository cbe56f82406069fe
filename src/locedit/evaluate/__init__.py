"""Judging an edit: suites of prompts, judges of images, the before/after evaluation and its results
(the image scorers of causal tracing live in `locedit.scorers`)."""
