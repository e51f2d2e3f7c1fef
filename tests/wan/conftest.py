"""tests/wan: the tiny components live beside the tests; the naive loop lives in tests/.

Every test module here imports pnp_kernels.wan, which needs diffusers: where diffusers is missing (a
GPU machine without the carried wheel) each module is reported as skipped, with the reason, instead
of failing collection."""
import importlib.util
import sys
from pathlib import Path

import pytest

for folder in (Path(__file__).parent, Path(__file__).parent.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

DIFFUSERS_MISSING = importlib.util.find_spec("diffusers") is None


class _SkippedModule(pytest.Module):
    def _getobj(self):
        pytest.skip("needs diffusers (pip install 'pnp-kernels[wan]'), which is not installed", allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    if DIFFUSERS_MISSING:
        return _SkippedModule.from_parent(parent, path=module_path)
    return None
