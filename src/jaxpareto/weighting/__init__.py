"""Weightings: pure solvers from the Gramian (and losses, preference) to task weights.

Layering: this package sees only arrays; it imports neither optax nor the Jacobian code.
"""

from jaxpareto.weighting.base import Weighting
