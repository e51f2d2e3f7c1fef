"""pnp_kernels: fast Predict-and-Perturb self-refining sampling for flow-matching video models."""
from .config import DEFAULT_PLAN, WAN22_T2V_PLAN, PnPConfig, RefinePlan
from .ops import PhiloxNoise, PnPUpdateOutput, pnp_update
from .sampler import Guided, IterationEvent, NonFiniteError, PnPResult, PnPStats, pnp_sample

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PLAN",
    "WAN22_T2V_PLAN",
    "Guided",
    "IterationEvent",
    "NonFiniteError",
    "PhiloxNoise",
    "PnPConfig",
    "PnPResult",
    "PnPStats",
    "PnPUpdateOutput",
    "RefinePlan",
    "pnp_sample",
    "pnp_update",
]
