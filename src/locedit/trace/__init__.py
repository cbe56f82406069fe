"""Causal tracing of the UNet and the text encoder (Basu et al., ICLR 2024): engine, layers,
the plan of a run, its execution and its result store."""

from locedit.trace.engine import (
    GenerationSettings,
    TextCell,
    Tracer,
    TraceSettings,
    UnitResult,
    calibrate_noise,
    effect,
)
from locedit.trace.layers import (
    TEXT_STATES,
    UNET_KINDS,
    UNET_TEMPLATES,
    UNetCell,
    UNetLayer,
    UnknownLayerError,
    select_unet_cells,
    unet_layers,
)
from locedit.trace.runner import TraceRequest, plan_trace, probe_file, run_trace

__all__ = [
    "TEXT_STATES",
    "UNET_KINDS",
    "UNET_TEMPLATES",
    "GenerationSettings",
    "TextCell",
    "TraceRequest",
    "TraceSettings",
    "Tracer",
    "UNetCell",
    "UNetLayer",
    "UnitResult",
    "UnknownLayerError",
    "calibrate_noise",
    "effect",
    "plan_trace",
    "probe_file",
    "run_trace",
    "select_unet_cells",
    "unet_layers",
]
