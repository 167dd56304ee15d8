"""Datasets: the catalog of what each one is, its sources, a user's folder or CSV of images (files,
decoding, the decoded-image cache), and tasks as whole tensors.

Import the modules themselves (``functions.data.tasks``); this file imports nothing, so the
torch-free catalog stays torch-free.
"""
