"""Checkpoints: one safetensors file (no pickle) + a JSON copy of the config, each written atomically.

A checkpoint directory holds
    model.safetensors  every tensor of the bundle ("model.generator.main.0.weight", ...) and of its optimizers
                       ("optim.g.state.0.exp_avg", ...); its metadata holds the config, the epoch, the loss history
                       and the optimizers' hyper-parameters as JSON. One file, so one atomic rename makes the whole
                       epoch visible at once: a killed run leaves the previous epoch intact, never a mix.
    config.json        the same config, for people and tools that do not read safetensors.
"""
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._files import atomic_write
from . import models

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "egbas-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not ours."""




def _weights_path(path):
    path = Path(path)
    file = path / WEIGHTS if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a directory with {WEIGHTS} "
                                f"(written by `egbas train` or eg.save_checkpoint)")
    return file


def save_checkpoint(out_dir, model, epoch=0, optimizers=None, history=None, training=None):
    """Write `model` (a bundle from models.build, or the explorable part of one, e.g. zoo.face_dcgan()) to
    out_dir/model.safetensors + out_dir/config.json, atomically. optimizers: {name: torch.optim.Optimizer} to
    resume from; history: JSON-able loss record; training: JSON-able run settings stored in the config.
    Returns the directory."""
    config = getattr(model, "egbas_config", None)
    if config is None:
        raise ValueError("save_checkpoint needs a model built by egbas_fast.models (it has no egbas_config)")
    config = {**config, **({"training": training} if training is not None else {})}
    if hasattr(model, "explorable"):  # a whole bundle
        parts, state = [name for name, _ in model.named_children()], model.state_dict()
    else:  # a lone part: it must be the one E-GBAS explores, stored under that part's name
        name = models.from_config(config).explorable
        parts, state = [name], {f"{name}.{k}": v for k, v in model.state_dict().items()}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    optim_groups = {}
    for name, optimizer in (optimizers or {}).items():
        sd = optimizer.state_dict()
        optim_groups[name] = sd["param_groups"]
        for index, param_state in sd["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{name}.state.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {"format": FORMAT, "config": json.dumps(config), "parts": json.dumps(parts), "epoch": str(int(epoch)),
                "history": json.dumps(history or {}), "optimizers": json.dumps(optim_groups)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    atomic_write(out_dir / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    return out_dir


def _metadata(file):
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a truncated/foreign file
        raise CheckpointError(f"{file} is not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not an egbas checkpoint (no '{FORMAT}' metadata)")
    return meta


def read_config(path):
    """The config dict of a checkpoint (model kind, latent_dim, input_shape, output_shape, image_shape, width,
    training settings) without loading any weights."""
    return json.loads(_metadata(_weights_path(path))["config"])


def read_checkpoint(path):
    """Everything needed to resume: dict with config, parts, epoch, history, model_state (bundle state_dict) and
    optimizers ({name: optimizer state_dict})."""
    file = _weights_path(path)
    meta = _metadata(file)
    model_state, optim_state = {}, {}
    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            kind, _, rest = key.partition(".")
            if kind == "model":
                model_state[rest] = f.get_tensor(key)
            else:  # optim.<name>.state.<index>.<key>
                name, _, index, param_key = rest.split(".", 3)
                optim_state.setdefault(name, {}).setdefault(int(index), {})[param_key] = f.get_tensor(key)
    optimizers = {name: {"state": optim_state.get(name, {}), "param_groups": groups}
                  for name, groups in json.loads(meta["optimizers"]).items()}
    return {"config": json.loads(meta["config"]), "parts": json.loads(meta["parts"]), "epoch": int(meta["epoch"]),
            "history": json.loads(meta["history"]), "model_state": model_state, "optimizers": optimizers}


def load(path, part=None):
    """The model of a checkpoint (a directory or its model.safetensors), in eval mode, with `egbas_config`.

    part=None returns the part E-GBAS explores:
        gan, dcgan -> the generator  (latent (B, d) -> images (B, C, H, W) in [-1, 1])
        vae        -> the generator  (decoder after the second stage's latent map, models.VAEGenerator)
        ae         -> the decoder    (latent (B, d) -> images (B, C, H, W) in [-1, 1])
        classifier -> the classifier (images (B, C, H, W) in [-1, 1] -> logits (B, n_classes))
    part="discriminator" / "encoder" / ... returns that part; part="all" the whole bundle.
    """
    ckpt = read_checkpoint(path)
    bundle = models.from_config(ckpt["config"])
    part = bundle.explorable if part is None else part
    if part != "all" and part not in ckpt["parts"]:
        raise KeyError(f"checkpoint {path} has no part {part!r}; it has {', '.join(ckpt['parts'])} (or 'all')")
    if part == "all" and len(ckpt["parts"]) < len(list(bundle.children())):
        raise KeyError(f"checkpoint {path} holds only {', '.join(ckpt['parts'])}, not the whole bundle")
    module = bundle if part == "all" else getattr(bundle, part)
    prefix = "" if part == "all" else part + "."
    state = {k[len(prefix):]: v for k, v in ckpt["model_state"].items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match its config: {e}") from None
    module.egbas_config = ckpt["config"]
    return module.eval()
