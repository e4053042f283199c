"""Preference-driven continuation along the Pareto set (PPE), public as ``jp.ppe``.

Modules by concept: :mod:`~jaxpareto.ppe.directions` (loss-space requests),
:mod:`~jaxpareto.ppe.krylov` (HVP, GMRES), :mod:`~jaxpareto.ppe.tangent` (tangent, predictor),
:mod:`~jaxpareto.ppe.corrector` (Newton on the KKT system; MGDA, EPO),
:mod:`~jaxpareto.ppe.trace` (predictor–corrector loop, step control), and
:mod:`~jaxpareto.ppe.navigator` (the interactive shell).

Amakor, Sonntag & Peitz (2026, "Interactive Pareto navigation for deep multi-task
learning", arXiv 2606.19521) propose predictor steps tangent to the Pareto set, chosen to
follow a decision maker's preference, a corrector back to a Pareto point, and a Krylov
solver on Hessian-vector products for the tangent. We could read only its abstract; the
equations below are ours, after Hillermeier (2001, "Nonlinear multiobjective
optimization: a generalized homotopy approach"), Martín & Schütze (2018, "Pareto
Tracer") and Ma, Du & Matusik (2020, "Efficient continuous Pareto exploration in
multi-task learning").

**The manifold.** ``θ`` is Pareto-critical with KKT weights ``α ∈ Δ_m`` when

    F(θ, α) = Σ_i α_i ∇l_i(θ) = 0,        1ᵀα = 1.                         (1)

Differentiating (1) along a curve ``(θ(s), α(s))`` on the solution set gives

    H_α θ' + Jᵀ α' = 0,   1ᵀα' = 0,   H_α = Σ_i α_i ∇²l_i,   J = [∇l_1 … ∇l_m]ᵀ.  (2)

``H_α`` is symmetric but generally indefinite (the EPO synthetic problem has a concave
front), so it is inverted with GMRES, never CG. Writing ``ξ = α'`` and
``W = H_α⁻¹ Jᵀ`` (``n × m``, one solve per task):

    v = θ' = −W ξ,     δl = J v = −S ξ,     S = J W = J H_α⁻¹ Jᵀ  (m × m).      (3)

At a point of (1) ``Jᵀα = 0``, so ``Sα = 0``: every first-order loss change is
orthogonal to ``α``, the normal of the front, as it must be.

**Following a preference.** A preference is a desired loss change ``d ∈ R^m``
(:func:`improve_direction`, :func:`toward_direction`). The tangent picks

    ξ = argmin_{1ᵀξ = 0} ‖S ξ + d‖₂                                          (4)

(an ``(m−1)``-dimensional least-squares problem on an orthonormal basis of
``{1ᵀξ = 0}``, solved with a truncated SVD), so the predicted change ``−Sξ`` is the
closest first-order achievable change to ``d``; when ``S`` has rank ``m − 1`` it is the
Euclidean projection of ``d`` onto the tangent space ``α^⊥`` of the front.

**Predictor–corrector.** :func:`predictor` is ``θ + σ v``; :func:`corrector` brings the
predicted point back: by default (in :func:`trace`) Newton steps on the KKT system
``F(θ, α) = 0``, ``1ᵀα = 1`` pinned by ``m − 1`` loss- or weight-space conditions,
solved matrix-free through a Schur complement in the ``m × m`` space and globalised by
a line search on the scaled KKT residual (:mod:`jaxpareto.ppe.corrector`); the
first-order MGDA and EPO correctors stay as options. :func:`trace` chains them with
scale-free step control (:mod:`jaxpareto.ppe.trace`: a relative trust length, a
dimensionless cap on the weight change, and the predictor–corrector discrepancy rule)
and :class:`Navigator` wraps :func:`trace` in a stateful, undoable session. Every stop
and failure has a named :class:`Status`; a point whose corrector did not converge is
flagged (``Trace.converged``) and the Navigator warns (:class:`PPEWarning`).

**Cost model** (gradient-evaluation equivalents, reported by every function):

=====================================  =====
one gradient of a scalar loss           1
one evaluation of ``loss_fn`` only      0.5
one Jacobian (``m`` losses)             m
one Hessian-vector product              2
=====================================  =====

:func:`tangent` linearises ``∇(Σ α_i l_i)`` once and reuses it for every GMRES
matrix-vector product; each product is still counted as a full HVP (2), so the figure is
an upper bound. With ``batched=True`` the ``m`` solves run in lock step (``vmap``), and
the count is ``2 m · max_i(iterations_i)`` because finished solves keep computing until
the slowest is done; with ``batched=False`` it is ``2 Σ_i iterations_i``.

GMRES: :mod:`jaxpareto.ppe.krylov`.
"""

from __future__ import annotations

from jaxpareto.ppe._common import (
    BUDGET,
    COST_FORWARD,
    COST_GRADIENT,
    COST_HVP,
    PPEWarning,
    Status,
)
from jaxpareto.ppe.corrector import KKT_STEPS, CorrectorResult, corrector
from jaxpareto.ppe.directions import improve_direction, toward_direction
from jaxpareto.ppe.krylov import GmresResult, gmres, hvp
from jaxpareto.ppe.navigator import Navigator
from jaxpareto.ppe.tangent import Tangent, predictor, tangent
from jaxpareto.ppe.trace import Trace, trace

# Stop reasons by their former module-level names (members of Status).
MAX_POINTS = Status.MAX_POINTS
END_OF_FRONT = Status.END_OF_FRONT
TARGET_REACHED = Status.TARGET_REACHED
NO_PROGRESS = Status.NO_PROGRESS
STEP_TOO_SMALL = Status.STEP_TOO_SMALL
NON_FINITE = Status.NON_FINITE
CORRECTOR_FAILED = Status.CORRECTOR_FAILED
GMRES_NOT_CONVERGED = Status.GMRES_NOT_CONVERGED
CONVERGED = Status.CONVERGED

__all__ = [
    "COST_GRADIENT",
    "COST_FORWARD",
    "COST_HVP",
    "Status",
    "PPEWarning",
    "BUDGET",
    "MAX_POINTS",
    "END_OF_FRONT",
    "TARGET_REACHED",
    "NO_PROGRESS",
    "STEP_TOO_SMALL",
    "NON_FINITE",
    "CORRECTOR_FAILED",
    "GMRES_NOT_CONVERGED",
    "CONVERGED",
    "KKT_STEPS",
    "GmresResult",
    "Tangent",
    "CorrectorResult",
    "Trace",
    "Navigator",
    "hvp",
    "gmres",
    "tangent",
    "predictor",
    "corrector",
    "trace",
    "improve_direction",
    "toward_direction",
]
