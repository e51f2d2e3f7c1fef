"""pnp-info prints versions and every backend with the reason it is unavailable."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pnp_kernels import info
from pnp_kernels.ops import backends


def test_collect_info_lists_every_backend_per_device():
    collected = info.collect_info()
    assert collected["torch"] == torch.__version__
    assert set(collected["backends"]) == {"cpu"} | ({"cuda"} if torch.cuda.is_available() else set())
    reasons, chosen = collected["backends"]["cpu"]
    assert set(reasons) == set(backends.OP_BACKEND_PRIORITY)
    assert reasons["torch"] == [] and chosen == "torch"
    assert reasons["cuda"], "the CUDA backend cannot run on CPU tensors and must say why"
    if torch.cuda.is_available():
        assert collected["backends"]["cuda"][1] in ("triton", "cuda")


def test_unavailable_backend_reason_is_printed(monkeypatch, capsys):
    monkeypatch.setitem(backends.BACKENDS, "cuda", backends.UnavailableBackend("cuda", "extension xyz not built"))
    assert info.main([]) == 0
    printed = capsys.readouterr().out
    assert "cuda    unavailable: extension xyz not built" in printed
    assert f"torch       {torch.__version__}" in printed
    for name in backends.OP_BACKEND_PRIORITY:
        assert f"  {name} " in printed
    assert "auto -> torch" in printed


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "pnp_kernels.info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "backends for cpu tensors" in done.stdout and "triton" in done.stdout


def test_environment_is_one_json_record_for_every_consumer(monkeypatch):
    import json
    import platform

    monkeypatch.setenv("PNP_KERNELS_NO_JIT", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    found = info.environment()
    assert json.loads(json.dumps(found)) == found  # written as-is into sidecars and benchmark files
    # What the benchmark report reads, and what a bug report needs.
    assert {"device", "gpu", "driver", "cuda", "torch", "triton", "diffusers", "date", "triton_interpret"} <= set(found)
    assert found["python"] == platform.python_version() and found["cpu_count"] >= 1
    assert found["gpu"] == torch.cuda.is_available() and found["cuda"] == torch.version.cuda
    assert found["triton_interpret"] is True and found["settings"]["PNP_KERNELS_NO_JIT"] == "1"
    if not found["gpu"]:
        assert found["device"].startswith("CPU") and found["gpus"] == [] and found["driver"] is None


@pytest.mark.parametrize("dtype, channels", [("float32", 80), (torch.float16, 65)])
def test_backend_reasons_follow_dtype_and_channels(dtype, channels):
    report = info.backend_reasons("cpu", dtype, channels=channels)
    assert report.reasons["torch"] == [] and report.chosen == "torch"
    assert any(f"C={channels}" in reason for reason in report.reasons["triton"])
    assert not any("C=" in reason for reason in info.backend_reasons("cpu", dtype, channels=48).reasons["triton"])
