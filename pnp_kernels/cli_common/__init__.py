"""What the command-line tools (``pnp-sample``, ``pnp-eval``) share: how they fail (``errors``), the
argument types and sampling options (``options``), and running over torchrun's ranks (``parallel``).

The tools' packages import from here and never from one another. Importing this package does not import
torch.
"""
