"""The numerics of a cell's step: precision (fp32, tf32, bf16, fp16), memory format.

fp32 turns TF32 off on CUDA (PyTorch leaves it on for convolutions by default, which
would make "fp32" a mixed number); tf32 turns it on for matmuls and convolutions;
bf16 and fp16 run the forward pass and the loss under autocast, fp16 with a gradient
scaler, whose state is checkpointed with the optimizer so a resumed run is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from jobs.plan.params import TrainParams

if TYPE_CHECKING:
    from jobs.train.workers import Workers

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

AfterAverage = Callable[[torch.Tensor | None], None]
"""Called between averaging the gradients and the update, with the scale the local gradients carry
(the gradient scaler's, or None): jobs/train/noise.py's measurement."""


def step_after_average(optimizer: torch.optim.Optimizer, workers: Workers, after_average: AfterAverage | None) -> None:
    """The optimizer's step; with `after_average`, the averaged gradients first, then the call."""
    if after_average is None:
        optimizer.step()
        return
    workers.synchronize(optimizer)  # Horovod waits for its allreduces here; DDP averaged in backward
    after_average(None)
    with workers.averaged(optimizer):
        optimizer.step()


@dataclass
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool

    def is_plain(self) -> bool:
        """fp32 (or TF32, a matmul setting) in the default memory format: the step needs none of the calls below."""
        return self.autocast_dtype is None and self.scaler is None and not self.channels_last

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, workers: Workers,
                          after_average: AfterAverage | None = None) -> None:
        if self.scaler is None:
            loss.backward()
            step_after_average(optimizer, workers, after_average)
            return
        self.scaler.scale(loss).backward()
        # Average the gradients before unscaling them, then step without averaging again.
        workers.synchronize(optimizer)
        self.scaler.unscale_(optimizer)
        if after_average is not None:
            after_average(self.scaler._get_scale_async())  # the scale of this backward, before update()
        with workers.averaged(optimizer):
            self.scaler.step(optimizer)
        self.scaler.update()


def configure_precision(params: TrainParams, device: torch.device, model: torch.nn.Module) -> Precision:
    """Set the process-wide TF32 switches and the model's memory format; refuse what the device cannot run."""
    if device.type != "cuda" and params.precision in ("tf32", "fp16"):
        raise RuntimeError(f"precision = {params.precision!r} needs a CUDA GPU, and this worker runs on "
                           f"{device.type}: use fp32 or bf16 there")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = params.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = params.precision == "tf32"
    if params.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    scaler = torch.amp.GradScaler(device.type) if params.precision == "fp16" else None
    return Precision(device, AUTOCAST_DTYPES.get(params.precision), scaler, params.channels_last)
