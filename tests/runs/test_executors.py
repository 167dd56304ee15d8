"""How tensors travel to Ray workers: as numpy bytes the object store passes out of band, and back
as the same tensors, in memory of their own."""
import pickle

import pytest
import torch

from functions.runs.executors import tensor_from_state, tensor_state


def _shipped(tensor: torch.Tensor) -> tuple:
    """Through pickle as Ray's object store uses it: numpy buffers out of band."""
    buffers = []
    stream = pickle.dumps(tensor_state(tensor), protocol=5, buffer_callback=buffers.append)
    return tensor_from_state(pickle.loads(stream, buffers=buffers)), buffers


@pytest.mark.parametrize("tensor", [
    torch.randn(3, 4), torch.randn(3, 4).t(), torch.tensor(3.5), torch.arange(6).reshape(2, 3),
    torch.zeros(0, 5), torch.tensor([True, False]), torch.randn(4, dtype=torch.bfloat16),
    torch.randn(2, dtype=torch.complex64).conj(), torch.randint(0, 255, (2, 3), dtype=torch.uint8),
], ids=["float", "transposed", "scalar", "int64", "empty", "bool", "bfloat16", "conjugate", "uint8"])
def test_a_tensor_comes_back_equal_with_its_dtype_and_shape(tensor):
    back, _ = _shipped(tensor)
    assert back.dtype == tensor.dtype and back.shape == tensor.shape and torch.equal(back, tensor.resolve_conj())


def test_the_bytes_travel_out_of_band_and_come_back_writable():
    tensor = torch.randn(64, 16, 14, 14)
    back, buffers = _shipped(tensor)
    assert len(buffers) == 1 and buffers[0].raw().nbytes == tensor.numel() * 4  # not copied into the stream
    back += 1  # its own memory: the object store's buffer is read-only
    assert torch.equal(back, tensor + 1)


def test_gradients_flags_and_other_layouts_are_kept():
    weight = torch.randn(2, 2).requires_grad_()
    assert _shipped(weight)[0].requires_grad and not _shipped(torch.randn(2))[0].requires_grad
    sparse = torch.randn(3, 3).to_sparse()
    back, buffers = _shipped(sparse)
    assert back.is_sparse and torch.equal(back.to_dense(), sparse.to_dense()) and not buffers


def test_a_channels_last_tensor_comes_back_channels_last_without_a_copy_on_either_side():
    tensor = torch.randn(8, 3, 5, 6).contiguous(memory_format=torch.channels_last)
    back, buffers = _shipped(tensor)
    assert torch.equal(back, tensor) and back.stride() == tensor.stride()
    assert len(buffers) == 1 and buffers[0].raw().nbytes == tensor.numel() * 4
    a_view = torch.randn(8, 3, 5, 6).contiguous(memory_format=torch.channels_last)[::2]  # not dense: default layout
    back, _ = _shipped(a_view)
    assert torch.equal(back, a_view) and back.is_contiguous()
