"""The P&P engine: one sampling run's state machine (``state``), its statistics (``stats``), its noise
(``noise``) and the agreement of ranks that sample together (``ranks``)."""
from .ranks import check_process_group
from .state import NAN_READ_INTERVAL, PnPEngine, advance_together, check_sigmas
from .stats import IterationEvent, NonFiniteError, PnPStats, StepStats

__all__ = [
    "NAN_READ_INTERVAL", "IterationEvent", "NonFiniteError", "PnPEngine", "PnPStats", "StepStats", "advance_together",
    "check_process_group", "check_sigmas",
]
