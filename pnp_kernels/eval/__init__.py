"""Paired A/B evaluation of P&P against the unrefined baseline with weight-free video metrics
(``pnp-eval``; docs/EVAL.md)."""
