"""The fused P&P update op and its backends."""
from .inputs import PnPUpdateInputs
from .outputs import PnPUpdateOutput
from .philox import PhiloxNoise, philox_normal
from .pnp_update import pnp_update
from .reference import pnp_update_reference

__all__ = ["PhiloxNoise", "PnPUpdateInputs", "PnPUpdateOutput", "philox_normal", "pnp_update", "pnp_update_reference"]
