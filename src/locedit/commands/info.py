"""`locedit info MODEL`: family, text encoders, editable layers and the base fingerprint."""

from __future__ import annotations

import json

from locedit.commands.common import add_model_args, load_model


def register(sub) -> None:
    p = sub.add_parser("info", help="show a model's family, encoders, editable layers and fingerprint")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    from locedit.edit.targets import editable_targets, fingerprint
    from locedit.models import detect_family, text_encoders

    pipe = load_model(args)
    family = detect_family(pipe)
    encoders = []
    for handle in text_encoders(pipe):
        encoders.append(
            {
                "name": handle.name,
                "kind": handle.kind,
                "class": type(handle.encoder).__name__,
                "layers": handle.num_layers,
                "hidden_size": int(handle.encoder.config.hidden_size),
                "context": handle.context_length,
                "pad_token": handle.tokenizer.pad_token,
            }
        )
    from locedit.edit.quickfix import MODULES

    targets = [t for kind in MODULES for t in editable_targets(pipe, kind=kind)]  # default module first
    info = {
        "model": args.model,
        "family": family.name,
        "pipeline": type(pipe).__name__,
        "encoders": encoders,
        "editable_layers": [t.name for t in targets],
        "fingerprint": fingerprint(pipe, [t.name for t in targets]),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model:       {info['model']}")
    print(f"family:      {info['family']} ({info['pipeline']})")
    for enc in encoders:
        print(
            f"encoder:     {enc['name']}: {enc['kind']} [{enc['class']}], {enc['layers']} layers, "
            f"width {enc['hidden_size']}, context {enc['context']}, pads with {enc['pad_token']!r}"
        )
    print("editable:    " + "\n             ".join(info["editable_layers"]))
    print(f"fingerprint: {info['fingerprint']}")
    return 0
