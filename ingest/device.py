"""Which device the engine runs on: `auto` (a CUDA GPU when torch sees one, else the CPU), `cpu`,
`cuda` or `cuda:N`. Only torch's own queries are used, so nothing CUDA-specific is imported or
initialised on a machine without a GPU."""

from __future__ import annotations

import torch

from circuitstore.ingest.config import check_device
from circuitstore.schema.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """The torch device for a `--device` value, refused in one line when absent here."""
    check_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {spec}: torch sees no CUDA GPU on this machine (allowed here: auto, cpu)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {spec}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}"
            )
    return device


def use_tf32(enabled: bool) -> None:
    """TF32 matrix products on CUDA GPUs (float32 inputs, 10-bit mantissas inside the product);
    off unless asked for, so that float32 means float32 on every device. The CPU is untouched."""
    matmul = torch.backends.cuda.matmul
    try:  # torch >= 2.9 reads the new setting; its legacy flag is then ignored
        matmul.fp32_precision = "tf32" if enabled else "ieee"
    except AttributeError:
        matmul.allow_tf32 = enabled
