"""`locedit demo`: trace, edit and evaluate the built-in shapes model end to end."""

from __future__ import annotations

from locedit.builtin.demo import DemoSettings
from locedit.commands.common import add_options, add_quiet, settings_from_args


def register(sub) -> None:
    p = sub.add_parser("demo", help="trace, edit and evaluate the built-in model (about 3 minutes on a CPU)")
    p.add_argument("--out", default="locedit-demo", help="output folder (default: locedit-demo)")
    add_options(p, DemoSettings)  # --steps, --eval-per-group
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from locedit.builtin.demo import run_demo, summary_markdown

    settings = settings_from_args(DemoSettings, args)
    summary = run_demo(args.out, settings, quiet=args.quiet)
    print(summary_markdown(summary))
    print(f"demo written to {args.out}/ (summary.md, heatmaps/, eval/ with before/after grids, edit.safetensors)")
    return 0
