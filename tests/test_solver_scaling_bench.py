"""The residuals of ``benchmarks/solver_scaling.py`` against analytic answers."""

from __future__ import annotations

import numpy as np

from benchmarks import solver_scaling


def test_min_norm_residual_is_zero_at_the_closed_form_and_large_elsewhere():
    # Two tasks at norms 1e-4 and 1e4 at 60°: argmin over the simplex of ‖β₁g₁ + β₂g₂‖²
    # has the closed form β₁ = ⟨g₂, g₂ − g₁⟩ / ‖g₁ − g₂‖².
    g1 = 1e-4 * np.array([1.0, 0.0])
    g2 = 1e4 * np.array([0.5, np.sqrt(3) / 2])
    gram = np.array([[g1 @ g1, g1 @ g2], [g1 @ g2, g2 @ g2]])
    b1 = g2 @ (g2 - g1) / ((g1 - g2) @ (g1 - g2))
    beta = np.array([b1, 1 - b1])
    assert solver_scaling.min_norm_residual(gram, beta) <= 1e-8
    # The large task alone is far from optimal on the small task's scale.
    assert solver_scaling.min_norm_residual(gram, np.array([0.0, 1.0])) > 0.1


def test_conflict_is_the_worst_negative_cosine():
    jac = np.array([[1.0, 0.0], [-1.0, 1e-3], [0.0, 1e-6]])
    gram = jac @ jac.T
    np.testing.assert_allclose(solver_scaling.conflict(gram, np.array([1.0, 0.0, 0.0])),
                               1 / np.hypot(1, 1e-3), rtol=1e-12)
    assert solver_scaling.conflict(gram, np.array([0.0, 0.0, 1.0])) == 0.0
    assert solver_scaling.conflict(gram, np.zeros(3)) == 0.0
