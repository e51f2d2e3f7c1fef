"""The fake ComfyUI modules (fake_comfy.py) where the node looks them up, for the test that asks."""
import sys

import pytest

from .fake_comfy import comfy_modules


@pytest.fixture
def comfy(monkeypatch):
    """Installs ``comfy.samplers`` and ``comfy.model_management``; returns the module dict."""
    modules = comfy_modules()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules
