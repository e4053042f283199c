"""Interactive, undoable exploration of the Pareto set (:class:`Navigator`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_preference
from jaxpareto.ppe._common import (
    PPEWarning,
    Status,
    _check_int,
    _check_scalar,
    _num_tasks,
    _with_batches,
)
from jaxpareto.ppe.directions import improve_direction
from jaxpareto.ppe.trace import Trace, trace

# Stop reasons that mean "the move did not do what was asked".
_STALLED = (
    Status.STEP_TOO_SMALL,
    Status.NON_FINITE,
    Status.CORRECTOR_FAILED,
    Status.GMRES_NOT_CONVERGED,
    Status.NO_PROGRESS,
)


def _check_move(t: Trace, what: str, *, initial: bool = False) -> None:
    """``warnings.warn`` (:class:`PPEWarning`) when a move was not clean."""
    k = int(t.length)
    conv = np.asarray(t.converged)[:k]
    msgs = []
    if not np.all(conv):
        idx = np.flatnonzero(~conv).tolist()
        rel = float(np.max(np.asarray(t.relative_stationarity)[:k][~conv]))
        msgs.append(
            f"the corrector did not converge at point(s) {idx} (relative "
            f"stationarity up to {rel:.2e})"
        )
    gm = np.asarray(t.gmres_converged)[:k]
    if not np.all(gm):
        res = float(np.max(np.asarray(t.gmres_residual)[:k][~gm]))
        msgs.append(
            f"tangent GMRES solves did not converge at point(s) "
            f"{np.flatnonzero(~gm).tolist()} (relative residual up to {res:.2e}; "
            "raise gmres_maxiter or add damping)"
        )
    reason = t.reason
    if not initial and reason in _STALLED:
        fail = Status(int(t.failure))
        why = "" if fail == Status.NONE else f"; last rejected attempt: {fail!r} ({fail.message})"
        msgs.append(
            f"the move stopped with {reason!r} ({reason.message}) after {k - 1} step(s){why}"
        )
    if not initial and reason == Status.MAX_POINTS:
        msgs.append(
            f"the point budget (max_points) ran out after {k - 1} step(s), before "
            "the target or the end of the front"
        )
    if not initial and k == 1 and reason not in _STALLED:
        msgs.append(f"no step was taken ({reason!r}: {reason.message})")
    elif not initial and reason == Status.END_OF_FRONT:
        # Clean stop, but short of the request: an unreachable ray or floor.
        target = (
            "the preference ray is not reachable on this front"
            if what == "toward"
            else "the requested decrease is not reachable"
        )
        msgs.append(
            f"{target}: the move stopped at the end of the front (Status.END_OF_FRONT)"
            f" after {k - 1} step(s), at the closest front point it could reach"
        )
    if initial and reason in (Status.NON_FINITE, Status.CORRECTOR_FAILED):
        msgs.append(f"the start could not be corrected: {reason!r}")
    if msgs:
        warnings.warn(f"Navigator.{what}: " + "; ".join(msgs), PPEWarning, stacklevel=3)


class Navigator:
    """Interactive exploration of the Pareto set: a stateful shell around :func:`trace`.

    ``nav = Navigator(loss_fn, params, *args)`` corrects ``params`` onto the Pareto set;
    then ``nav.improve(task, amount)`` moves along the front until task ``task``'s loss
    has dropped by ``amount`` (or the front ends), ``nav.toward(r)`` moves to the
    front's point on the ray ``r ⊙ l ∝ 1`` (or as close as the front allows), and
    ``nav.undo()`` returns to where the last move started (bitwise). Each move is one
    :func:`trace` call (compiled once per kind of move), starts exactly at the current
    point (``correct_start=False``: no re-correction) and is kept in ``history``.

    Every method returns the move's :class:`Trace`; ``trace.reason`` is its
    :class:`Status` (``TARGET_REACHED``, ``END_OF_FRONT``, ``STEP_TOO_SMALL``, ...) and
    ``trace.summary()`` says it in a line. A :class:`PPEWarning` is issued when a
    corrector or GMRES solve did not converge or when a move stalled (never a silent
    no-op), and when a move ends at the end of the front short of its target (an
    unreachable preference ray or decrease).

    ``batches=`` (a :func:`trace` option) navigates on chunked data: every move's losses,
    gradients and HVPs are means over all the chunks (the whole training set).

    Attributes:
      params, losses, alpha: the current point (the last valid point of the last move).
      front: ``[N, m]`` numpy array of the loss vectors visited by the moves in the
        history, in order (the start first, then each move's new points); its last row
        is always ``losses``. An undone move's points are removed.
      history: list of :class:`Trace`, one per move (the first is the initial
        correction: a one-point trace with a zero request).
      cost: total gradient-evaluation equivalents spent (undone moves included).
    """

    def __init__(self, loss_fn: Callable[..., jax.Array], params, *args, **trace_options):
        for bad in ("direction", "num_points", "preference", "floor", "alpha", "correct_start"):
            if bad in trace_options:
                raise TypeError(f"Navigator sets `{bad}` itself; do not pass it.")
        # Chunked data (mini-batch navigation over the whole data set): wrap once, so
        # every move reuses the wrapped loss (and its compiled trace).
        loss_fn, args = _with_batches(loss_fn, args, trace_options.pop("batches", None))
        self._loss_fn = loss_fn
        self._args = args
        self._max_points = trace_options.pop("max_points", 50)
        _check_int(self._max_points, "max_points", 2)
        self._options = trace_options
        self.m, dtype = _num_tasks(loss_fn, params, args)
        # The initial correction is a trace with a zero request: it corrects the start,
        # finds no direction and stops.
        start = trace(
            loss_fn, params, jnp.zeros((self.m,), dtype), self._max_points, *args, **trace_options
        )
        _check_move(start, "__init__", initial=True)
        self.history: list[Trace] = [start]
        self.cost = float(start.cost_gradient_evals)

    def _last(self, field: str):
        t = self.history[-1]
        i = int(t.length) - 1
        return jax.tree_util.tree_map(lambda x: x[i], getattr(t, field))

    @property
    def params(self):
        return self._last("params")

    @property
    def losses(self) -> jax.Array:
        return self._last("losses")

    @property
    def alpha(self) -> jax.Array:
        return self._last("alpha")

    @property
    def front(self) -> np.ndarray:
        parts = [
            np.asarray(
                self.history[0].losses[
                    int(self.history[0].length) - 1 : int(self.history[0].length)
                ]
            )
        ]
        for t in self.history[1:]:
            parts.append(np.asarray(t.losses[1 : int(t.length)]))
        return np.concatenate(parts, axis=0)

    def _move(self, what: str, direction, **kwargs) -> Trace:
        t = trace(
            self._loss_fn,
            self.params,
            direction,
            self._max_points,
            *self._args,
            alpha=self.alpha,
            correct_start=False,
            **kwargs,
            **self._options,
        )
        self.history.append(t)
        self.cost += float(t.cost_gradient_evals)
        _check_move(t, what)
        return t

    def improve(self, task: int, amount) -> Trace:
        """Lower task ``task``'s loss by ``amount``, letting the others rise along the
        front. Returns the move's :class:`Trace` (``reason``: ``TARGET_REACHED``,
        ``END_OF_FRONT``, or why it stalled)."""
        d = improve_direction(self.m, task, amount)
        _check_scalar(amount, "amount", positive=True)
        losses = self.losses
        floor = jnp.full((self.m,), -jnp.inf, losses.dtype).at[task].set(losses[task] - amount)
        return self._move("improve", d.astype(losses.dtype), floor=floor)

    def toward(self, preference) -> Trace:
        """Move along the front to its point on the ray ``preference ⊙ l ∝ 1``."""
        preference = check_preference(preference, self.m)
        return self._move("toward", "toward", preference=preference)

    def undo(self):
        """Return to the point before the last move; returns the restored params."""
        if len(self.history) <= 1:
            raise ValueError("Nothing to undo: no move has been made.")
        self.history.pop()
        return self.params
