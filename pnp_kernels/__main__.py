"""``python -m pnp_kernels`` is ``pnp-sample``."""
import sys

from .cli import main

sys.exit(main())
