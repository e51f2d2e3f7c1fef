"""A 2-D flow-matching toy that shows Predict-and-Perturb pulling samples toward the data.

``data`` draws the datasets, ``model`` is the velocity MLP (weights shipped in ``weights/``),
``train`` fits it, ``metric`` scores samples by their distance to the data, ``experiment`` runs the
library's ``pnp_sample`` on point clouds, ``study`` prints the full comparison and ``demo`` is the
quick version behind ``pnp-sample --demo``.
"""
