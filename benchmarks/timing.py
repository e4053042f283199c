"""Timing and reporting helpers shared by the benchmark scripts.

Every benchmark jit-compiles and warms up before timing, blocks on every timed result,
reports the median of repeats, and writes ``benchmarks/results/NAME.json`` with the
machine and the library versions next to the numbers.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def block(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def median_time(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``fn`` must return its result (blocked on here) so asynchronous dispatch is timed
    to completion.
    """
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def machine() -> dict:
    """The machine and versions, for the JSON next to the numbers."""
    import optax

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
    }
    try:
        info["device_kind"] = jax.devices()[0].device_kind
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def write(name: str, payload: dict, out_dir: pathlib.Path | None = None) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=float))
    return path
