"""Tests of pnp_kernels.ops; a package so that the test files share ``helpers``."""
