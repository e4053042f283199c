"""jaxpareto: gradient-based multi-objective optimization and multi-task learning in JAX.

``import jaxpareto as jp``. The layers: Jacobians (``value_and_jacobian``,
``gramian``, ``combine``) → weightings (pure solvers over the Gramian, in
``jp.weighting``) → optax transforms (``jp.epo``, ``jp.mgda``, ...). Beside them:
``jp.ppe`` (Pareto navigation), ``jp.hypernetwork``, ``jp.sharding`` (meshes for
data- and model-parallel steps), ``jp.metrics``, ``jp.problems``, ``jp.data``,
``jp.models``.
"""

from jaxpareto import (
    _api,
    checkpoint,
    data,
    hypernetwork,
    loss_weighting,
    metrics,
    models,
    ppe,
    problems,
    sharding,
    weighting,
)
from jaxpareto.gramian_engine import GramianVJP, gramian_aggregate, gramian_vjp, value_and_gramian
from jaxpareto.jacobian import (
    combine,
    filter_value_and_jacobian,
    gramian,
    mtl_value_and_grad,
    value_and_jacobian,
)
from jaxpareto.loss_weighting import TRANSFORMS as _LOSS_TRANSFORMS
from jaxpareto.loss_weighting import (
    LossVJP,
    LossWeightedState,
    db_mtl,
    init_log_vars,
    loss_objective,
    loss_vjp,
    loss_weighted,
    uncertainty_loss,
)
from jaxpareto.status import Status, StatusError, check_status
from jaxpareto.transforms import (
    AccumulateJacobianState,
    AggregateState,
    aasf,
    accumulate_jacobian,
    aggregate,
    aligned_mtl,
    aug_chebyshev,
    cagrad,
    chebyshev,
    config,
    constant,
    cosmos,
    dualproj,
    epo,
    fairgrad,
    graddrop,
    gradvac,
    hv_gradient,
    imtl_g,
    krum,
    linear,
    mgda,
    moco,
    nash_mtl,
    pbi,
    pcgrad,
    pmtl,
    pnorm,
    random,
    sdmgrad,
    smooth_chebyshev,
    sum,
    trimmed_mean,
    upgrad,
)
from jaxpareto.weighting import (
    EpoResult,
    LPResult,
    MinNormResult,
    PmtlResult,
    Weighting,
    chebyshev_weights,
    epo_weights,
    linear_weights,
    linprog_simplex,
    min_norm_weights,
    pmtl_weights,
)

# Loss-based weightings as optax transforms (one backward pass a step).
uncertainty = _LOSS_TRANSFORMS["uncertainty"]
imtl_l = _LOSS_TRANSFORMS["imtl_l"]
dwa = _LOSS_TRANSFORMS["dwa"]
rlw = _LOSS_TRANSFORMS["rlw"]
gls = _LOSS_TRANSFORMS["gls"]
famo = _LOSS_TRANSFORMS["famo"]
gradnorm = _LOSS_TRANSFORMS["gradnorm"]

__version__ = "0.1.0"

__all__ = [
    "checkpoint",
    "data",
    "hypernetwork",
    "loss_weighting",
    "metrics",
    "models",
    "ppe",
    "problems",
    "sharding",
    "weighting",
    "Status",
    "StatusError",
    "check_status",
    "combine",
    "filter_value_and_jacobian",
    "gramian",
    "mtl_value_and_grad",
    "value_and_jacobian",
    "GramianVJP",
    "gramian_aggregate",
    "gramian_vjp",
    "value_and_gramian",
    "AccumulateJacobianState",
    "AggregateState",
    "accumulate_jacobian",
    "aggregate",
    "aligned_mtl",
    "cagrad",
    "chebyshev",
    "dualproj",
    "epo",
    "imtl_g",
    "linear",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "pmtl",
    "smooth_chebyshev",
    "upgrad",
    "config",
    "constant",
    "fairgrad",
    "graddrop",
    "gradvac",
    "krum",
    "random",
    "sum",
    "trimmed_mean",
    "aasf",
    "aug_chebyshev",
    "cosmos",
    "pbi",
    "pnorm",
    "sdmgrad",
    "moco",
    "hv_gradient",
    "LossVJP",
    "LossWeightedState",
    "db_mtl",
    "dwa",
    "famo",
    "gls",
    "gradnorm",
    "imtl_l",
    "init_log_vars",
    "loss_objective",
    "loss_vjp",
    "loss_weighted",
    "rlw",
    "uncertainty",
    "uncertainty_loss",
    "EpoResult",
    "LPResult",
    "MinNormResult",
    "PmtlResult",
    "Weighting",
    "chebyshev_weights",
    "epo_weights",
    "linear_weights",
    "linprog_simplex",
    "min_norm_weights",
    "pmtl_weights",
]

# Short reprs for the public results and states; dir() of each public module = its API.
_api.finish()
