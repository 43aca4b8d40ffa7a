"""Launching cells: one submitit job per cell, waited for on the login node."""
