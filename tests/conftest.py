"""Test configuration: float64 by default, hypothesis profiles.

Tests check correctness in float64 (x64 enabled here, before any array is created) and
behaviour in float32 by creating float32 arrays explicitly.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

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
