"""egbas-fast: E-GBAS (Jeon, Jeong, Choi, AAAI 2020, arXiv 1912.05827) with a fast C++ core.

Public names are loaded lazily so that `import egbas_fast.core` does not pay for torch.
"""
import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "GenerativeRegion": "region",
    "select_boundaries": "selection",
    "Selection": "selection",
    "explore": "exploration",  # a module named explore would shadow the function
    "Exploration": "exploration",
    "sample_ball": "baselines",
    "BallSamples": "baselines",
    "sample_region": "sampling",
    "RegionSamples": "sampling",
    "coverage": "metrics",  # a module named coverage would shadow the function
    "load": "checkpoint",
    "save_checkpoint": "checkpoint",
    "sweep": "sweeps",  # a module named sweep would shadow the function
    "invert": "inversion",
    "Inversion": "inversion",
    "encode": "inversion",
}
_SUBMODULES = {"core", "zoo", "models", "data", "train"}

__all__ = sorted(_PUBLIC) + sorted(_SUBMODULES)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'egbas_fast' has no attribute {name!r}")


def __dir__():
    return __all__
