"""`locedit demo`: trace, edit and evaluate the built-in shapes model end to end."""

from __future__ import annotations

from locedit.errors import InvalidInputError


def register(sub) -> None:
    p = sub.add_parser("demo", help="trace, edit and evaluate the built-in model (about 3 minutes on a CPU)")
    p.add_argument("--out", default="locedit-demo", help="output folder (default: locedit-demo)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 20)")
    p.add_argument("--eval-per-group", type=int, default=None, help="prompts per evaluation group (default 24)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=run)


def run(args) -> int:
    from locedit.builtin.demo import DemoSettings, run_demo

    settings = DemoSettings()
    if args.steps is not None:
        if args.steps < 1:
            raise InvalidInputError(f"--steps must be >= 1 (got {args.steps})")
        settings.steps = args.steps
    if args.eval_per_group is not None:
        if args.eval_per_group < 1:
            raise InvalidInputError(f"--eval-per-group must be >= 1 (got {args.eval_per_group})")
        settings.eval_per_group = args.eval_per_group
    summary = run_demo(args.out, settings, quiet=args.quiet)
    if not args.quiet:
        from locedit.builtin.demo import summary_markdown

        print(summary_markdown(summary))
    print(f"demo written to {args.out}/ (summary.md, heatmaps/, eval/ with before/after grids, edit.safetensors)")
    return 0
