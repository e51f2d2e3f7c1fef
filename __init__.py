"""ComfyUI custom node entry: ComfyUI imports this file when the repository sits in ComfyUI/custom_nodes
(docs/COMFYUI.md). The import is relative, so it works whatever the folder is called and loads the
copy of pnp_kernels inside it."""
from .pnp_kernels.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
