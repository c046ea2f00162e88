"""What a model offers the explorer: its explorable layers (`list_layers`, `egbas layers`).

A layer is explorable when its module runs in the forward pass and returns one tensor; its units are that
tensor's elements per sample.
"""
from dataclasses import dataclass

import torch

from .layers import evaluating


@dataclass
class LayerInfo:
    name: str  # dotted name in model.named_modules()
    kind: str  # module class name
    shape: tuple  # per-sample output shape; () when not a tensor
    units: int  # elements per sample (0 when the output is not a single tensor)
    calls: int  # times the module ran in one forward

    @property
    def explorable(self):
        return self.units > 0 and self.calls == 1


def list_layers(model, example):
    """Every submodule that runs for the batch `example` (B, ...), in the order it first runs: [LayerInfo].

    One forward in eval mode under no_grad; every hook is removed in `finally`.
    """
    seen = {}
    order = []

    def pre_hook_for(name):
        def pre_hook(_module, _inputs):
            if name not in order:  # the order modules are entered (a container before its children)
                order.append(name)
        return pre_hook

    def hook_for(name, module):
        def hook(_module, _inputs, output):
            if name not in seen:
                tensor = isinstance(output, torch.Tensor)
                shape = tuple(output.shape[1:]) if tensor else ()
                units = int(output[0].numel()) if tensor and output.dim() > 0 else 0
                seen[name] = LayerInfo(name, type(module).__name__, shape, units, 0)
            seen[name].calls += 1
        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_pre_hook(pre_hook_for(n)) for n, m in named]
    handles += [m.register_forward_hook(hook_for(n, m)) for n, m in named]
    try:
        with torch.no_grad(), evaluating(model):
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [seen[n] for n in order if n in seen]


def format_layers(layers):
    """A text table of `list_layers`: name, module, output shape, units."""
    rows = [("layer", "module", "output shape", "units")]
    for info in layers:
        note = "" if info.explorable else (" (not one tensor)" if not info.units else f" (runs {info.calls}x)")
        rows.append((info.name, info.kind, "x".join(map(str, info.shape)) or "-", f"{info.units}{note}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)
