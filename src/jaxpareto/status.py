"""Named outcomes shared by every solver: the LP, the QP, GMRES, the PPE and the weightings.

One :class:`Status` (an :class:`enum.IntEnum`, after optimistix's ``RESULTS``) names what a
solver did. Inside jitted code a status is an int32 array (``jnp.asarray(Status.X,
jnp.int32)``), so results and states stay pytrees of arrays that ``jit``, ``vmap``,
``lax.scan`` and checkpoints carry; outside, ``Status(int(x))`` names it and
``Status.X.message`` says in one line what it means.

Standalone solver calls can ask to fail loudly: :func:`check_status` raises
:class:`StatusError` on a concrete result whose status is not a success, and inside a
function transformed by :func:`jax.experimental.checkify.checkify` it records a
``checkify`` error instead (``checkify.checkify(f)(...)`` returns ``(err, out)``;
``err.throw()`` raises it).
"""

from __future__ import annotations

import enum

__all__ = ["Status", "StatusError", "check_status"]


class Status(enum.IntEnum):
    """What a solver did; stored as int32 arrays in results and states.

    The first members are shared by every solver (their values are those of the LP's
    former bare codes, so ``int(result.status) == 0`` still means success); the rest are
    the outcomes of the Pareto-set continuation (:mod:`jaxpareto.ppe`).

    ``Status(int(x))`` names a concrete code; ``.message`` explains it; ``.ok`` says
    whether it counts as a success for :func:`check_status`.
    """

    SUCCESSFUL = 0  #: the solver met its tolerance (or the closed form was exact).
    INFEASIBLE = 1  #: the problem has no feasible point; the documented fallback was used.
    MAX_ITER = 2  #: the iteration cap (``max_iter``) was reached before the tolerance.
    NUMERICAL_ERROR = 3  #: a breakdown inside the solver (singular pivot, overflow).
    NONFINITE_INPUT = 4  #: a non-finite Gramian, loss or preference: finite fallback used.
    DEGENERATE = 5  #: zero or rank-deficient input: the documented fallback was used.
    # Continuation (jaxpareto.ppe): Trace.stop_reason, Trace.failure, CorrectorResult.status.
    MAX_POINTS = 6  #: ``num_points`` points recorded (the point budget).
    END_OF_FRONT = 7  #: a KKT weight reached ``alpha_tol`` and the tangent would lower it.
    TARGET_REACHED = 8  #: the floor (improve) or the preference ray (toward) was reached.
    NO_PROGRESS = 9  #: the requested direction has no component along the front.
    STEP_TOO_SMALL = 10  #: ``max_shrinks + 1`` rejected attempts in a row.
    NON_FINITE = 11  #: a non-finite value appeared during continuation (losses, tangent).
    CORRECTOR_FAILED = 12  #: the corrector did not reach its tolerance (budget, line search).
    GMRES_NOT_CONVERGED = 13  #: ... and its last Krylov solves missed their tolerance.
    CONVERGED = 14  #: the corrector reached its tolerance.
    NONE = 15  #: nothing to report (e.g. ``Trace.failure`` when no attempt was rejected).

    def __repr__(self) -> str:
        return f"Status.{self.name}"

    def __str__(self) -> str:
        return self.name

    @property
    def message(self) -> str:
        """One line saying what the status means."""
        return _MESSAGES[self]

    @property
    def ok(self) -> bool:
        """True for the outcomes that are successes (:func:`check_status` passes them)."""
        return self in _OK


_MESSAGES = {
    Status.SUCCESSFUL: "converged",
    Status.INFEASIBLE: "the problem is infeasible; the documented fallback was used",
    Status.MAX_ITER: "the iteration cap (max_iter) was reached before the tolerance",
    Status.NUMERICAL_ERROR: "a numerical breakdown inside the solver; the fallback was used",
    Status.NONFINITE_INPUT: "non-finite input (Gramian, losses or preference); finite fallback used",
    Status.DEGENERATE: "zero or rank-deficient input; the documented fallback was used",
    Status.MAX_POINTS: "the point budget (num_points) was used up",
    Status.END_OF_FRONT: "the end of the front: a KKT weight reached zero",
    Status.TARGET_REACHED: "the target (floor or preference ray) was reached",
    Status.NO_PROGRESS: "the requested direction has no component along the front",
    Status.STEP_TOO_SMALL: "every shortened attempt of the last step was rejected",
    Status.NON_FINITE: "a non-finite value appeared",
    Status.CORRECTOR_FAILED: "the corrector did not reach its tolerance",
    Status.GMRES_NOT_CONVERGED: "the corrector failed and its GMRES solves did not converge",
    Status.CONVERGED: "converged",
    Status.NONE: "-",
}

_OK = frozenset(
    {
        Status.SUCCESSFUL,
        Status.CONVERGED,
        Status.MAX_POINTS,
        Status.END_OF_FRONT,
        Status.TARGET_REACHED,
        Status.NONE,
    }
)


class StatusError(RuntimeError):
    """Raised by :func:`check_status` (and by ``throw=True`` solver calls) when a result's
    status is not a success; ``.status`` holds the offending :class:`Status`."""

    def __init__(self, status: Status, where: str = "") -> None:
        self.status = status
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{status!r}: {status.message}")


def _status_of(result):
    for name in ("status", "stop_reason"):
        if hasattr(result, name):
            return getattr(result, name)
    if hasattr(result, "dtype") or isinstance(result, int):
        return result
    raise TypeError(f"{type(result).__name__} has no `status` field to check.")


def check_status(result, *, allowed=None, where: str = ""):
    """Raise if ``result``'s status is not a success; return ``result`` unchanged.

    Args:
      result: a solver result or weighting state with a ``status`` field (a
        :class:`jaxpareto.ppe.Trace` is read through ``stop_reason``), or a status array.
      allowed: the statuses that pass (default: those with :attr:`Status.ok`, i.e.
        ``SUCCESSFUL``, ``CONVERGED`` and the normal stops of a trace).
      where: a name put in front of the error message (e.g. the solver's name).

    With a concrete status (an eager call) every entry of the (possibly batched) status
    is checked and the first failing one raises :class:`StatusError`. With a traced
    status (inside ``jit``) the check is a :func:`jax.experimental.checkify.check`: wrap
    the caller with ``checkify.checkify`` to get the error (an unwrapped jitted call
    raises at trace time that the check was not functionalised).

    Example:
      >>> import jax.numpy as jnp, jaxpareto as jp
      >>> mask = jnp.array([False])
      >>> res = jp.linprog_simplex(jnp.array([1.0, 0.0]), jnp.zeros((1, 2)), jnp.zeros(1), mask)
      >>> jp.Status(int(jp.check_status(res).status))
      Status.SUCCESSFUL
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    ok = _OK if allowed is None else frozenset(Status(int(s)) for s in allowed)
    status = _status_of(result)
    if isinstance(status, jax.core.Tracer):
        from jax.experimental import checkify  # noqa: PLC0415

        codes = jnp.asarray(sorted(int(s) for s in ok), jnp.int32)
        passed = jnp.all(jnp.isin(jnp.asarray(status, jnp.int32), codes))
        prefix = f"{where}: " if where else ""
        checkify.check(passed, prefix + "solver status {code} is not a success", code=status)
        return result
    for code in np.unique(np.asarray(status).astype(np.int64)).tolist():
        st = Status(code)
        if st not in ok:
            raise StatusError(st, where)
    return result
