"""``python -m pnp_kernels.eval`` is ``pnp-eval``."""
import sys

from .cli import main

sys.exit(main())
