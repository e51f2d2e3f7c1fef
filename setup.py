"""Build entry point. Static metadata lives in pyproject.toml; the CUDA extension in csrc/ is added here."""
from setuptools import setup

setup()
