"""Device choice, CPU threads and mixed precision, in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here; use --device cpu or auto")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for a device: bf16 (or fp16) on CUDA; none on CPU (bf16 is ~100x slower here)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def needs_grad_scaler(device: torch.device, enabled: bool) -> bool:
    return enabled and amp_dtype(device) == torch.float16
