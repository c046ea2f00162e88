"""Layer access by dotted name, a forward that stops at the layer, and a forward with the layer masked.

A layer is any module of `model.named_modules()` ("main.2", "blocks.body.1"...). Its *value* is the module's output
for a batch, flattened per sample to (B, units). Reading it runs only the prefix of the network: a forward hook
captures the output and raises a private exception that unwinds the rest of the forward (Captum's layer-hook idea).
"""
import contextlib
import difflib

import torch
from torch import nn


class _StopForward(Exception):
    """Raised from the layer's forward hook to skip every later layer."""


class LayerNotReached(RuntimeError):
    """The layer never ran in the model's forward pass."""


class LayerOutputError(TypeError):
    """The layer's output is not a single tensor."""


_ACTIVATION_WORDS = ("relu", "gelu", "elu", "silu", "swish", "tanh", "sigmoid", "softplus", "mish", "act")


def get_layer(model, name):
    """The submodule of `model` called `name` in `model.named_modules()`; a clear error lists close names."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"layer must be a dotted module name (str), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    names = [n for n in modules if n]  # "" is the model itself
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(map(repr, names[:30])) + (", ..." if len(names) > 30 else "")
    functional = ""
    if any(word in name.lower() for word in _ACTIVATION_WORDS):
        functional = (f". An activation called functionally in forward (F.relu, torch.tanh, ...) is not a module "
                      f"and has no name: name the module that feeds it (for ReLU-like activations its output has "
                      f"the same signs, so the regions are the same), or make the activation a module (nn.ReLU)")
    raise ValueError(f"unknown layer {name!r}{hint} (layers of this model: {shown}){functional}")


def model_device(model):
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model):
    """Floating dtype the model computes in (its first floating parameter/buffer; float32 otherwise)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


@contextlib.contextmanager
def evaluating(model):
    """eval() mode inside the block; every submodule's own training flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def one_thread():
    """One torch intra-op thread inside the block: for small-batch work that gains nothing from more (on 2 busy
    cores two threads ran 2.7x slower than one), and so that float sums do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _flat_output(name, output):
    if not isinstance(output, torch.Tensor):
        raise LayerOutputError(f"layer {name!r} returns {type(output).__name__}; its output must be a single tensor")
    return output


def layer_output(model, layer, x):
    """Value of `layer` (a dotted name) for the batch `x`, flattened to (B, units); later layers are not run.

    Runs under no_grad in eval mode (every module's training flag restored afterwards).
    """
    return prefix_output(model, get_layer(model, layer), layer, x)


def prefix_output(model, module, name, x, eval_mode=True, capture="output", grad=False):
    """`layer_output` for an already looked-up `module` (hot path). eval_mode=False leaves the mode to the caller;
    grad=True keeps the graph (no no_grad, no detach) so that the caller can differentiate the result.

    The forward stops inside the layer's hook, so no later op (DCGAN's in-place ReLU included) can touch the
    value before we return it: no copy is needed. A module called more than once gives its first call's output.
    capture="input" returns the module's (first) input instead, read by a pre-hook before the module runs (an
    in-place ReLU would have overwritten it by the time a forward hook sees it): an activation's pre-activation.
    """
    captured = []

    def hook(_module, _inputs, output):
        out = _flat_output(name, output)
        captured.append(out if grad else out.detach())
        raise _StopForward

    def pre_hook(_module, inputs):
        out = _flat_output(name, inputs[0] if inputs else None)
        captured.append(out if grad else out.detach())
        raise _StopForward

    if capture == "input":
        handle = module.register_forward_pre_hook(pre_hook)
    else:
        handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad), (evaluating(model) if eval_mode else contextlib.nullcontext()):
            try:
                model(x)
            except _StopForward:
                pass
    finally:
        handle.remove()
    if not captured:
        raise LayerNotReached(f"layer {name!r} never ran in the model's forward pass; choose a layer on the "
                           f"path from the input to the output")
    out = captured[0]
    return out.reshape(out.shape[0], -1)  # (B, units)


def prefix_output_replacing(model, module, name, x, source, value, capture="output"):
    """`prefix_output` with the output of the earlier module `source` replaced by `value` (same shape), with grad:
    the result is not detached, so gradients flow back to `value`. The caller chooses the mode."""
    captured = []

    def replace(_module, _inputs, _output):
        return value

    def hook(_module, inputs, output):
        captured.append(_flat_output(name, inputs[0] if capture == "input" else output))
        raise _StopForward

    handles = [source.register_forward_hook(replace)]
    if capture == "input":
        handles.append(module.register_forward_pre_hook(lambda m, inputs: hook(m, inputs, None)))
    else:
        handles.append(module.register_forward_hook(hook))
    try:
        try:
            model(x)
        except _StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    if not captured:
        raise LayerNotReached(f"layer {name!r} never ran after the replaced module in the model's forward pass")
    out = captured[0]
    return out.reshape(out.shape[0], -1)


def masked_forward(model, layer, x, mask):
    """Full forward of `x` with the layer's output multiplied by `mask`.

    mask: (units,) or (B, units), broadcast over the batch; it may require grad (selection optimises it).
    The caller chooses the mode and grad context; the hook is removed in `finally`. A module called more than once
    is masked at every call.
    """
    module = get_layer(model, layer)
    ran = []

    def hook(_module, _inputs, output):
        output = _flat_output(layer, output)
        ran.append(True)
        m = mask.to(output.dtype)
        if m.dim() == 1:
            return output * m.view(output.shape[1:])
        return output * m.view(output.shape)

    handle = module.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        handle.remove()
    if not ran:
        raise LayerNotReached(f"layer {layer!r} never ran in the model's forward pass; choose a layer on the "
                           f"path from the input to the output")
    return out
