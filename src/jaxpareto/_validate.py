"""Trace-time validation of static input (shapes, dtypes, concrete values).

Everything here runs while a function is being traced: it looks only at shapes, dtypes
and, where an argument is a concrete (non-traced) array, at its values. Numerical
degeneracy of traced values is never an exception; solvers turn it into a status flag.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values known at trace time (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_float(x, name: str) -> jax.Array:
    """Return ``x`` as an array; raise ``TypeError`` unless it has a floating dtype.

    float16 / bfloat16 are accepted (callers upcast internally where they must).
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating dtype (float16/bfloat16/float32/float64), "
            f"got {x.dtype}."
        )
    return x


def check_gram(gram, name: str = "gram", min_tasks: int = 1) -> jax.Array:
    """Validate a Gramian ``[m, m]`` with ``m >= min_tasks``; returns it as an array."""
    gram = check_float(gram, name)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"`{name}` must be a square [m, m] matrix, got shape {gram.shape}.")
    if gram.shape[0] < min_tasks:
        raise ValueError(
            f"`{name}` has m={gram.shape[0]} tasks; this method needs m >= {min_tasks}."
        )
    return gram


def check_vector(x, m: int, name: str) -> jax.Array:
    """Validate a float vector of shape ``[m]``."""
    x = check_float(x, name)
    if x.shape != (m,):
        raise ValueError(f"`{name}` must have shape ({m},) to match m={m} tasks, got {x.shape}.")
    return x


def check_preference(preference, m: int, name: str = "preference") -> jax.Array:
    """Validate a preference vector ``[m]``: floating, and where concrete, finite and > 0.

    A traced preference cannot be inspected at trace time; solvers that receive one
    guard it at run time (non-finite or non-positive entries give the documented
    fallback and a status flag).
    """
    if preference is None:
        raise ValueError(f"`{name}` is required for this method (shape ({m},), positive).")
    x = jnp.asarray(preference)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        # Integer preferences such as (1, 2) are a natural thing to write; accept them
        # as floats rather than erroring, but never booleans.
        if x.dtype == jnp.bool_:
            raise TypeError(f"`{name}` must be a float vector, got bool.")
        x = x.astype(jnp.result_type(float))
    if x.shape != (m,):
        raise ValueError(f"`{name}` must have shape ({m},) to match m={m} tasks, got {x.shape}.")
    if is_concrete(x):
        v = np.asarray(x)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"`{name}` must be finite, got {v}.")
        if not np.all(v > 0):
            raise ValueError(f"`{name}` must be strictly positive, got {v}.")
    return x


def working_dtype(*xs):
    """The dtype solvers compute in: the inputs' result type, at least float32.

    Half precision Gramians are too coarse for the LP / QP pivots, so float16 and
    bfloat16 inputs are solved in float32 and results are cast back by the caller.
    """
    dtype = jnp.result_type(*xs)
    if jnp.finfo(dtype).bits < 32:
        return jnp.float32
    return dtype


def check_int(x, name: str, minimum: int, fn: str) -> int:
    """A static Python int ``>= minimum``; errors name the function and the argument."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{fn}: `{name}` must be a Python int, got {type(x).__name__}.")
    if x < minimum:
        raise ValueError(f"{fn}: `{name}` must be >= {minimum}, got {x}.")
    return int(x)
