"""ComfyUI custom nodes for Predict-and-Perturb sampling (docs/COMFYUI.md).

ComfyUI reads ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` from a custom node folder's
``__init__.py``; the repository root's ``__init__.py`` re-exports these. Importing this package needs
neither ComfyUI nor torch.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
