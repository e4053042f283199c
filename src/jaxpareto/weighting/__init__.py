"""Weightings: pure solvers from the Gramian (and losses, preference) to task weights.

Each method has a pure solver (``min_norm_weights``, ``epo_weights``, ``pmtl_weights``,
``linear_weights``, ``chebyshev_weights``) and an optax-like weighting factory
(``mgda``, ``epo``, ``pmtl``, ``linear``, ``chebyshev``) returning
``Weighting(init, update, num_tasks)``.

Layering: this package sees only arrays; it imports neither optax nor the Jacobian code.
"""

from jaxpareto.weighting.base import Weighting
from jaxpareto.weighting.epo import EpoResult, EpoState, epo, epo_weights
from jaxpareto.weighting.lp import INFEASIBLE, MAX_ITER, NUMERICAL_ERROR, OPTIMAL, LPResult, linprog_simplex
from jaxpareto.weighting.min_norm import MgdaState, MinNormResult, kkt_residual, mgda, min_norm_weights
from jaxpareto.weighting.pmtl import PmtlResult, PmtlState, pmtl, pmtl_weights
from jaxpareto.weighting.scalarization import (
    ScalarizationState,
    chebyshev,
    chebyshev_weights,
    linear,
    linear_weights,
)

__all__ = [
    "Weighting",
    "EpoResult", "EpoState", "epo", "epo_weights",
    "INFEASIBLE", "MAX_ITER", "NUMERICAL_ERROR", "OPTIMAL", "LPResult", "linprog_simplex",
    "MgdaState", "MinNormResult", "kkt_residual", "mgda", "min_norm_weights",
    "PmtlResult", "PmtlState", "pmtl", "pmtl_weights",
    "ScalarizationState", "chebyshev", "chebyshev_weights", "linear", "linear_weights",
]
