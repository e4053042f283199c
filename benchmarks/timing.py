"""Timing, memory and reporting helpers shared by the benchmark scripts.

Every benchmark jit-compiles and warms up before timing, blocks on every timed result,
reports the median of repeats, and writes ``benchmarks/results/NAME.json`` with the
machine, the thread policy and the library versions next to the numbers.

Peers (cvxpy, torch, TorchJD, quadprog) are optional: :func:`peer` imports one or
returns ``None``, and the scripts then write :data:`NOT_INSTALLED` in its columns. They
are never simulated.

Thread policy (fair comparison on a CPU): :func:`set_threads` pins the whole process to
``N`` cores (``os.sched_setaffinity``), so XLA, PyTorch, numpy/scipy and the LP
solvers all share the same ``N`` cores, and gives PyTorch ``N`` intra-op threads and one
inter-op thread. The default is ``N = 1``: on a shared machine with more runnable
threads than cores, PyTorch's OpenMP regions with 2 threads were measured ~50× slower
than with 1 (a thread descheduled at every barrier), which would flatter jaxpareto;
``--threads 0`` uses every usable core.
"""

from __future__ import annotations

import importlib
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
NOT_INSTALLED = "not installed"
# Packages whose versions go into every JSON (peers included when installed).
_VERSIONED = ("jax", "jaxlib", "optax", "numpy", "scipy", "torch", "torchjd", "cvxpy",
              "cvxopt", "quadprog", "highspy", "matplotlib")


def block(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def median_time(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``fn`` must return its result (blocked on here) so asynchronous dispatch is timed
    to completion. The quartiles are reported so that noise on a shared machine shows.
    """
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    q = np.quantile(times, [0.25, 0.75])
    return {"median_s": statistics.median(times), "min_s": min(times),
            "q25_s": float(q[0]), "q75_s": float(q[1]), "repeats": repeats}


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int = 15,
                      warmup: int = 2) -> dict[str, dict]:
    """Median wall time of each ``fns[name]()``, the calls interleaved.

    Each round calls every function once, in a fixed order, after ``warmup`` calls of
    each; so a load change on the machine hits every method alike and the ratios taken
    within one round keep their meaning. Returns ``{name: {"median_s", "q25_s",
    "q75_s", "repeats"}}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        q = np.quantile(ts, [0.25, 0.75])
        out[name] = {"median_s": statistics.median(ts), "q25_s": float(q[0]),
                     "q75_s": float(q[1]), "repeats": repeats}
    return out


def num_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def peer(name: str):
    """The imported module ``name``, or ``None`` when it is not installed (or broken)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None


_THREADS: dict = {"requested": None, "cores": None}


def add_threads_arg(parser) -> None:
    parser.add_argument(
        "--threads", type=int, default=1,
        help="cores for every framework: the process is pinned to this many cores and "
             "torch gets as many intra-op threads (0 = all usable cores; default 1)")


def set_threads(n: int | None = None) -> int:
    """Pins this process to ``n`` cores and gives torch ``n`` intra-op threads.

    The same core budget for XLA and PyTorch is the fair comparison. ``n = None`` or
    ``0`` keeps every usable core. Call it before JAX runs anything: XLA sizes its
    thread pool when its CPU client starts (``--xla_cpu_multi_thread_eigen=false`` is
    also set for ``n = 1``; if the client already started it has no effect, the
    affinity still does). Returns the number of cores used.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if n and cores and n < len(cores):
        os.sched_setaffinity(0, set(cores[:n]))
        if n == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + " --xla_cpu_multi_thread_eigen=false").strip()
    used = num_threads()
    torch = peer("torch")
    if torch is not None:
        torch.set_num_threads(used)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
    _THREADS.update(requested=n, cores=used)
    return used


def _version(name: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:  # noqa: BLE001
        return NOT_INSTALLED


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine, thread policy and versions, for the JSON next to the numbers."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": num_threads(),
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
        "versions": {name: _version(name) for name in _VERSIONED},
        "threads": {
            "requested": _THREADS["requested"],
            "process_cores": num_threads(),
            "xla": "CPU client pinned to process_cores",
            "torch_intra_op": None,
            "policy": "process pinned to N cores (sched_setaffinity); torch.set_num_threads(N), "
                      "1 inter-op thread; XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""),
        },
    }
    torch = peer("torch")
    if torch is not None:
        info["threads"]["torch_intra_op"] = torch.get_num_threads()
    for key in ("jax", "optax", "numpy"):  # flat copies, as in the earlier JSON files
        info[key] = info["versions"][key]
    try:
        info["device_kind"] = jax.devices()[0].device_kind
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


# ------------------------------------------------------------------------- memory


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS counter (``VmHWM``) of this process (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """Peak resident set size since the last :func:`reset_peak_rss` (``VmHWM``)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_peak_bytes() -> int | None:
    """``peak_bytes_in_use`` of the first JAX device where the backend reports it (GPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def xla_memory(compiled) -> dict:
    """XLA's static memory plan of a compiled function (``jax.jit(f).lower(*a).compile()``):
    arguments, outputs, temporaries."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return {}
    if ma is None:
        return {}
    out = {}
    for key in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                "alias_size_in_bytes", "generated_code_size_in_bytes"):
        if hasattr(ma, key):
            out[key] = int(getattr(ma, key))
    if out:
        out["total_bytes"] = (out.get("argument_size_in_bytes", 0)
                              + out.get("output_size_in_bytes", 0)
                              + out.get("temp_size_in_bytes", 0)
                              - out.get("alias_size_in_bytes", 0))
    return out


# ------------------------------------------------------------------------- output


def ratio(num, den):
    """``num / den`` for two timings, or ``None`` when either is missing."""
    if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den > 0:
        return num / den
    return None


def fmt_time(x) -> str:
    """Seconds as a short human string (µs / ms / s), or the text as given."""
    if not isinstance(x, (int, float)):
        return str(x)
    if x < 1e-3:
        return f"{x * 1e6:.0f}µs"
    if x < 1:
        return f"{x * 1e3:.2f}ms"
    return f"{x:.2f}s"


def fmt_ratio(x) -> str:
    if not isinstance(x, (int, float)):
        return "–"
    return f"{x:.3g}×"


def write(name: str, payload: dict, out_dir: pathlib.Path | None = None) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=_default))
    return path


def _default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
