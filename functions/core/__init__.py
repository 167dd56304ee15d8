"""What every layer needs and nothing more: the error type, paths, atomic writes, device choice.

Importing :mod:`functions.core.errors` or :mod:`functions.core.paths` never pulls in torch.
"""
