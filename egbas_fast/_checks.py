"""Argument checks shared by the public functions: each raises TypeError/ValueError naming the argument."""
import math
import numbers


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def finite_real(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def positive_real(value, name):
    if finite_real(value, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def seed(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"seed must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"seed must be >= 0, got {value}")
    return int(value)
