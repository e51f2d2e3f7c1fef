"""An embedded physics-video model: procedurally rendered bouncing balls, a tiny flow-matching video
network trained on them, frame-based physics metrics, and a matched-NFE study of P&P (docs/PHYSICS_STUDY.md)."""
