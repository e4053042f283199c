"""Weightings: pure solvers from the Gramian (and losses, preference) to task weights.

Each method has a pure solver (``min_norm_weights``, ``epo_weights``, ``pmtl_weights``,
``linear_weights``, ``chebyshev_weights``, ``upgrad_weights``, ``dualproj_weights``,
``pcgrad_weights``, ``cagrad_weights``, ``nash_mtl_weights``, ``imtl_g_weights``,
``aligned_mtl_weights``, ``smooth_chebyshev_weights``, ``hv_gradient_weights``) and an
optax-like weighting factory (``mgda``, ``epo``, ``pmtl``, ``linear``, ``chebyshev``,
``upgrad``, ``dualproj``, ``pcgrad``, ``cagrad``, ``nash_mtl``, ``imtl_g``,
``aligned_mtl``, ``smooth_chebyshev``, ``hv_gradient``) returning
``Weighting(init, update, num_tasks)``. ``solve_qp`` is the batched jittable QP behind
UPGrad and DualProj.

Layering: this package sees only arrays; it imports neither optax nor the Jacobian code.
"""

from jaxpareto.weighting.aligned_mtl import (
    AlignedMtlResult,
    AlignedMtlState,
    aligned_mtl,
    aligned_mtl_weights,
)
from jaxpareto.weighting.base import Weighting
from jaxpareto.weighting.baselines import constant, random, random_weights, sum
from jaxpareto.weighting.cagrad import CagradResult, CagradState, cagrad, cagrad_weights
from jaxpareto.weighting.config import ConfigResult, config, config_weights
from jaxpareto.weighting.dualproj import DualProjResult, DualProjState, dualproj, dualproj_weights
from jaxpareto.weighting.epo import EpoResult, EpoState, epo, epo_weights
from jaxpareto.weighting.fairgrad import FairGradResult, fairgrad, fairgrad_weights
from jaxpareto.weighting.graddrop import graddrop, graddrop_direction
from jaxpareto.weighting.gradvac import GradVacResult, GradVacState, gradvac, gradvac_weights
from jaxpareto.weighting.hv_gradient import (
    HvGradientResult,
    HvGradientState,
    front_ranks,
    hv_gradient,
    hv_gradient_weights,
)
from jaxpareto.weighting.imtl import ImtlResult, ImtlState, imtl_g, imtl_g_weights
from jaxpareto.weighting.lp import (
    INFEASIBLE,
    MAX_ITER,
    NUMERICAL_ERROR,
    OPTIMAL,
    LPResult,
    linprog_simplex,
)
from jaxpareto.weighting.min_norm import (
    MgdaState,
    MinNormResult,
    kkt_residual,
    mgda,
    min_norm_weights,
)
from jaxpareto.weighting.moco import MocoState, moco
from jaxpareto.weighting.nash_mtl import NashMtlResult, NashMtlState, nash_mtl, nash_mtl_weights
from jaxpareto.weighting.pcgrad import (
    PcgradResult,
    PcgradState,
    pcgrad,
    pcgrad_weights,
    random_orders,
)
from jaxpareto.weighting.pmtl import PmtlResult, PmtlState, pmtl, pmtl_weights
from jaxpareto.weighting.qp import QPResult, project_dual_cone, qp_kkt_residual, solve_qp
from jaxpareto.weighting.robust import (
    KrumResult,
    krum,
    krum_weights,
    trimmed_mean,
    trimmed_mean_direction,
)
from jaxpareto.weighting.scalarization import (
    ScalarizationState,
    aasf,
    aasf_weights,
    aug_chebyshev,
    aug_chebyshev_weights,
    chebyshev,
    chebyshev_weights,
    cosmos,
    cosmos_weights,
    linear,
    linear_weights,
    pbi,
    pbi_weights,
    pnorm,
    pnorm_weights,
    smooth_chebyshev,
    smooth_chebyshev_weights,
)
from jaxpareto.weighting.sdmgrad import (
    SdmGradResult,
    SdmGradState,
    project_simplex,
    sdmgrad,
    sdmgrad_weights,
)
from jaxpareto.weighting.upgrad import UPGradResult, UPGradState, upgrad, upgrad_weights

__all__ = [
    "Weighting",
    "ConfigResult",
    "FairGradResult",
    "GradVacResult",
    "GradVacState",
    "KrumResult",
    "config",
    "config_weights",
    "constant",
    "fairgrad",
    "fairgrad_weights",
    "graddrop",
    "graddrop_direction",
    "gradvac",
    "gradvac_weights",
    "krum",
    "krum_weights",
    "random",
    "random_weights",
    "sum",
    "trimmed_mean",
    "trimmed_mean_direction",
    "aasf",
    "aasf_weights",
    "aug_chebyshev",
    "aug_chebyshev_weights",
    "cosmos",
    "cosmos_weights",
    "pbi",
    "pbi_weights",
    "pnorm",
    "pnorm_weights",
    "SdmGradResult",
    "SdmGradState",
    "project_simplex",
    "sdmgrad",
    "sdmgrad_weights",
    "MocoState",
    "moco",
    "EpoResult",
    "EpoState",
    "epo",
    "epo_weights",
    "INFEASIBLE",
    "MAX_ITER",
    "NUMERICAL_ERROR",
    "OPTIMAL",
    "LPResult",
    "linprog_simplex",
    "MgdaState",
    "MinNormResult",
    "kkt_residual",
    "mgda",
    "min_norm_weights",
    "PmtlResult",
    "PmtlState",
    "pmtl",
    "pmtl_weights",
    "ScalarizationState",
    "chebyshev",
    "chebyshev_weights",
    "linear",
    "linear_weights",
    "smooth_chebyshev",
    "smooth_chebyshev_weights",
    "AlignedMtlResult",
    "AlignedMtlState",
    "aligned_mtl",
    "aligned_mtl_weights",
    "CagradResult",
    "CagradState",
    "cagrad",
    "cagrad_weights",
    "HvGradientResult",
    "HvGradientState",
    "front_ranks",
    "hv_gradient",
    "hv_gradient_weights",
    "ImtlResult",
    "ImtlState",
    "imtl_g",
    "imtl_g_weights",
    "NashMtlResult",
    "NashMtlState",
    "nash_mtl",
    "nash_mtl_weights",
    "PcgradResult",
    "PcgradState",
    "pcgrad",
    "pcgrad_weights",
    "random_orders",
    "DualProjResult",
    "DualProjState",
    "dualproj",
    "dualproj_weights",
    "QPResult",
    "project_dual_cone",
    "qp_kkt_residual",
    "solve_qp",
    "UPGradResult",
    "UPGradState",
    "upgrad",
    "upgrad_weights",
]
