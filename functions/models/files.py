"""A study CNN as a file: its weights with the parameters that built it, and back.

Pretraining writes these files and everything that reads a source model (sweeps, feature
extractors, the service) rebuilds it through :func:`load_model`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ARCHITECTURE_KEYS, Config
from ..core.atomic import atomic_file
from ..core.errors import DataError
from .study_cnn import StudyCNN


def save_model(path, model: StudyCNN, info: dict) -> Path:
    """``info`` (its ``config`` holding at least the architecture keys and ``pre_train_classes``,
    and ``in_shape``) and the state dict, written atomically."""
    with atomic_file(path, "wb") as fh:
        torch.save({**info, "state_dict": model.state_dict()}, fh)
    return Path(path)


def read_torch_file(path, what: str):
    """The tensors saved in ``path`` (``torch.load`` with ``weights_only``); any other file is refused
    as not being ``what``, without torch's advice to retry with ``weights_only=False``, which would
    run whatever code a foreign pickle holds."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; give the path of {what}") from None
    except Exception as err:  # a truncated or foreign file fails inside the unpickler in many ways
        raise DataError(f"{path} is not {what} (torch cannot read it as saved tensors: {type(err).__name__}); "
                        f"give a file saved with torch.save") from None


def read_state_dict(path, what: str) -> dict:
    """The tensors of a state-dict file: ``.safetensors``, or saved with ``torch.save`` (a dict of
    tensors, or one holding it under ``state_dict``); anything else is refused as not being ``what``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist; give the path of {what}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as err:
            raise DataError(f"{path} is not {what} (safetensors cannot read it: {err})") from None
    else:
        state = read_torch_file(path, what)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise DataError(f"{path} is not {what}: it does not hold a state dict of tensors")
    return state


def load_model(path) -> tuple[StudyCNN, dict]:
    """The network saved in ``path`` and everything saved beside its weights."""
    path = Path(path)
    what = "a source model file written by `python -m functions pretrain`"
    saved = read_torch_file(path, what)
    try:
        params = saved["config"]
        cfg = Config().replace(**{k: params[k] for k in ARCHITECTURE_KEYS if k in params})
        model = StudyCNN(cfg, tuple(saved["in_shape"]), len(params["pre_train_classes"]))
        model.load_state_dict(saved["state_dict"])
    except (KeyError, IndexError, TypeError, RuntimeError) as err:
        raise DataError(f"{path} is not {what} ({type(err).__name__}: {err})") from err
    return model.to(memory_format=torch.channels_last), {k: v for k, v in saved.items() if k != "state_dict"}
