"""pnp-info prints versions and every backend with the reason it is unavailable."""
from __future__ import annotations

import subprocess
import sys

import torch

from pnp_kernels import info
from pnp_kernels.ops import backends


def test_collect_info_lists_every_backend_per_device():
    collected = info.collect_info()
    assert collected["torch"] == torch.__version__
    assert set(collected["backends"]) == {"cpu"} | ({"cuda"} if torch.cuda.is_available() else set())
    reasons, chosen = collected["backends"]["cpu"]
    assert set(reasons) == set(backends.AUTO_PRIORITY)
    assert reasons["torch"] == [] and chosen == "torch"
    assert reasons["cuda"], "the CUDA backend cannot run on CPU tensors and must say why"
    if torch.cuda.is_available():
        assert collected["backends"]["cuda"][1] in ("triton", "cuda")


def test_unavailable_backend_reason_is_printed(monkeypatch, capsys):
    monkeypatch.setitem(backends.BACKENDS, "cuda", backends.UnavailableBackend("cuda", "extension xyz not built"))
    assert info.main() == 0
    printed = capsys.readouterr().out
    assert "cuda    unavailable: extension xyz not built" in printed
    assert f"torch       {torch.__version__}" in printed
    for name in backends.AUTO_PRIORITY:
        assert f"  {name} " in printed
    assert "auto -> torch" in printed


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "pnp_kernels.info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "backends for cpu tensors" in done.stdout and "triton" in done.stdout
