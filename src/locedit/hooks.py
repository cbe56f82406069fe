"""Tiny hook module (in the spirit of baukit): trace a module, retain or edit its input/output,
stop the forward early, and always remove the hook on exit."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch


class StopForward(Exception):
    """Raised by a Trace with stop=True once its module has run; swallowed by that Trace's exit."""


class Trace(AbstractContextManager):
    """Hook one module for the duration of a `with` block.

    Args:
        module: the module to hook.
        retain_input: keep the first positional input in `.input`.
        retain_output: keep the output in `.output`.
        edit_output: `fn(output, module) -> output`, replaces the module's output.
        stop: raise StopForward after the module ran (and after retaining), so that the rest of
            the forward is skipped; the `with` block swallows it.
        detach: retained tensors are detached (not cloned: callers must not mutate the model
            activations in place).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        retain_input: bool = False,
        retain_output: bool = True,
        edit_output: Callable | None = None,
        stop: bool = False,
        detach: bool = True,
    ):
        self.module = module
        self.input = None
        self.output = None

        def hook(mod, args, output):
            if retain_input:
                self.input = _detach(args[0]) if detach else args[0]
            if edit_output is not None:
                output = edit_output(output, mod)
            if retain_output:
                self.output = _detach(output) if detach else output
            if stop:
                raise StopForward
            return output

        self._handle = module.register_forward_hook(hook)

    def close(self) -> None:
        self._handle.remove()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, tuple):
        return tuple(_detach(v) for v in x)
    if isinstance(x, list):
        return [_detach(v) for v in x]
    return x
