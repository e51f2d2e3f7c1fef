"""Tests of the ComfyUI nodes, run without ComfyUI (fake_comfy.py stands in for it)."""
