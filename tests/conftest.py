"""Test configuration: float64 by default, hypothesis profiles.

Tests check correctness in float64 (x64 enabled here, before any array is created) and
behaviour in float32 by creating float32 arrays explicitly.
"""

import gc
import os

# XLA's CPU "concurrency-optimized" thunk scheduler deadlocks (jax/jaxlib 0.10.2, 2 cores:
# every thread idle, the result never ready) on some vmapped solver programs, e.g.
# `jax.vmap(jp.min_norm_weights)` over 32 Gramians of size 32×32, whose while-loop runs
# batched LAPACK calls; 8 or 16 Gramians, or this scheduler off, run in ~1.5 s. README
# "Failure behaviour" documents the flag for users; the suite sets it before jax starts.
_NO_DEADLOCK = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if _NO_DEADLOCK not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _NO_DEADLOCK).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

# XLA's persistent compilation cache, for local reruns only (opt-in; CI starts from a
# fresh clone and its time budget does not count on it):
#   JAXPARETO_TEST_CACHE=~/.cache/jaxpareto-xla make test
# Programs that compiled in >= 0.2 s are stored; jax keys each entry on the program, the
# jax/jaxlib version, the backend and the flags, so a stale entry is never reused.
_CACHE_DIR = os.environ.get("JAXPARETO_TEST_CACHE")
if _CACHE_DIR:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(_CACHE_DIR))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile(
        "thorough", max_examples=10_000, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # hypothesis is in the dev extra; tests that need it import it.
    pass


# Memory guard. Every jitted program a test compiles stays in jax's caches for the life
# of the xdist worker: measured on the 2-core box, each worker passes 3.5 GiB RSS by the
# middle of the suite, and a CI run once lost a worker mid-test ("node down: Not properly
# terminated", no traceback) on the 24 GiB machine. As a precaution, after each test
# module a worker above _RSS_LIMIT that grew by another GiB since its last clear drops
# jax's compiled programs (later modules recompile what they need; a module is never
# cut in the middle).
_RSS_LIMIT = float(os.environ.get("JAXPARETO_TEST_RSS_GIB", "3")) * 2**30


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0.0


_after_last_clear = [0.0]


@pytest.fixture(autouse=True, scope="module")
def _bounded_worker_memory():
    yield
    rss = _rss_bytes()
    # Freed memory is not always handed back to the OS, so RSS stays high after a clear:
    # clear again only once the worker has grown by another GiB since the last one.
    if rss > _RSS_LIMIT and rss - _after_last_clear[0] > 2**30:
        jax.clear_caches()
        gc.collect()
        _after_last_clear[0] = _rss_bytes()
