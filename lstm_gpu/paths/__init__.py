"""Compute paths: one module per implementation of the contract in `base`."""
