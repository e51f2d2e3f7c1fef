"""What the command-line tools (``pnp-sample``, ``pnp-eval``) share: how they fail (``errors``), the
argument types and sampling flags (``options``), the check of an output path (``outputs``), running a local
Wan checkpoint (``checkpoint``: which model a folder holds and its published defaults; ``sampling``: the
sampling options checked and completed; ``pipeline``: loading it and one call), and running over
torchrun's ranks (``parallel``).

The tools' packages import from here and never from one another; this package imports only the core
and the integrations. Importing it does not import torch.
"""
