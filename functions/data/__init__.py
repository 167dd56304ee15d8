"""Datasets: the catalog of what each one is, its sources, and tasks as whole tensors.

Import the modules themselves (``functions.data.tasks``); this file imports nothing, so the
torch-free catalog stays torch-free.
"""
