"""Any model a user brings: its explorable layers (`list_layers`, `egbas layers`), an adapter for forwards that
are not `model(z) -> tensor` (`adapt`), and the checks every region makes on the model before any work
(`check_model`: one output tensor, a deterministic forward, a dtype the explorer can read).

A layer is explorable when its module runs in the forward pass and returns one tensor; its units are that
tensor's elements per sample.
"""
from dataclasses import dataclass

import torch
from torch import nn

from .layers import evaluating


class ModelInterfaceError(TypeError):
    """A model whose forward the explorer cannot use as it is; the message says how to adapt it."""


class Adapted(nn.Module):
    """`model` seen as z (B, ...) -> one tensor: the view `adapt` returns. Its named_modules are the model's own
    (layer names do not change), so hooks land on the model's modules."""

    def __init__(self, model, forward=None, args=(), kwargs=None, output=None):
        super().__init__()
        self.model = model
        self._forward, self._args, self._kwargs, self._output = forward, tuple(args), dict(kwargs or {}), output
        if hasattr(model, "egbas_config"):
            self.egbas_config = model.egbas_config

    def forward(self, z):
        if self._forward is not None:
            out = self._forward(self.model, z)
        else:
            out = self.model(z, *[_batched(a, len(z)) for a in self._args],
                             **{k: _batched(v, len(z)) for k, v in self._kwargs.items()})
        return select_output(out, self._output)

    def named_modules(self, *args, **kwargs):  # the model's names: "main.2", not "model.main.2"
        return self.model.named_modules(*args, **kwargs)


def _batched(value, n):
    """A fixed extra input given for one sample (leading dim 1) repeated to the batch size n."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1 and n != 1:
        return value.expand(n, *value.shape[1:])
    return value


def select_output(out, output):
    """The tensor `output` picks from a model's output: an index (tuple/list), a key (dict) or a callable."""
    if output is None:
        return out
    if callable(output):
        return output(out)
    try:
        return out[output]
    except (KeyError, IndexError, TypeError) as e:
        raise ModelInterfaceError(f"output={output!r} does not select from the model's {type(out).__name__} "
                                  f"output ({e})") from None


def adapt(model, *, forward=None, args=(), kwargs=None, output=None):
    """A view of `model` that every egbas_fast function accepts: latents (B, ...) in, one tensor out.

    forward: callable(model, z) -> output, for any calling convention (a conditional generator:
    `lambda m, z: m(z, labels)`; keyword-only: `lambda m, z: m(latent=z)`); args / kwargs: fixed extra inputs passed
    after z (a tensor with leading dim 1 is repeated over the batch), e.g. args=(torch.tensor([3]),) for class 3;
    output: what to explore from a tuple/list (an index), dict (a key) or anything (a callable). Layer names are
    the model's own.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if forward is not None and not callable(forward):
        raise TypeError(f"forward must be a callable (model, z) -> output, got {type(forward).__name__}")
    if forward is not None and (args or kwargs):
        raise ValueError("pass either forward= or fixed extra inputs (args= / kwargs=), not both")
    return Adapted(model, forward, args, kwargs, output)


_EXACT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_model(model, x):
    """Refuse, before any work, a model the explorer cannot use: `x` is one input (1, ...) in the model's dtype.

    Two full forwards of x in eval mode: the output must be one tensor (else: adapt(model, output=...)), and the
    two must be bit-identical (else the model draws noise in its forward: every membership verdict would be a coin
    toss). Raises ModelInterfaceError naming the cause and the fix.
    """
    with torch.no_grad(), evaluating(model):
        first = model(x)
        if not isinstance(first, torch.Tensor):
            hint = ("output=0 (or the index of the image)" if isinstance(first, (tuple, list))
                    else "output='KEY'" if isinstance(first, dict) else "output=callable")
            raise ModelInterfaceError(
                f"the model returns a {type(first).__name__}, not a single output tensor: wrap it as "
                f"eg.interface.adapt(model, {hint}) to say which output to explore")
        second = model(x)
    if first.dtype not in _EXACT_DTYPES:
        raise ModelInterfaceError(f"the model outputs {first.dtype}; it must compute in a floating dtype "
                                  f"(float32, float64, float16 or bfloat16)")
    if first.shape != second.shape or not torch.equal(first, second):
        raise ModelInterfaceError(
            "the model's forward is not deterministic: the same input gave different outputs twice (noise drawn "
            "in forward, e.g. StyleGAN-style noise injection, or dropout called functionally). A region needs the "
            "output to be a fixed function of the latent: draw the noise once and keep it in a buffer "
            "(module.register_buffer), or pass it as a fixed input: eg.interface.adapt(model, kwargs={'noise': "
            "fixed_noise})")


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
