"""The fused P&P update op and its backends."""
from .philox import PhiloxNoise, philox_normal
from .pnp_update import pnp_update
from .reference import PnPUpdateOutput, pnp_update_reference

__all__ = ["PhiloxNoise", "PnPUpdateOutput", "philox_normal", "pnp_update", "pnp_update_reference"]
