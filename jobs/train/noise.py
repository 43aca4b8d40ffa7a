"""The gradient noise scale, measured during data-parallel training at almost no cost.

McCandlish et al. 2018 (arXiv 1812.06162, appendix A): with N workers each taking a
local batch of B_small samples, every step already computes two gradients at two batch
sizes, each worker's local one (B_small) and their average (B_big = N x B_small). Their
squared norms give unbiased estimates of the true gradient's squared norm |G|^2 and of
the trace of the per-sample gradient covariance tr(Sigma):

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

and B_simple = tr(Sigma) / |G|^2, the batch size above which a larger batch stops
paying. Each estimate is noisy step to step, so each is smoothed before the ratio: we
average both over the epoch's steps (and |G_small|^2 over the workers), which keeps them
unbiased and gives one value per epoch, the granularity every other metric has
(McCandlish use an exponential moving average; any linear smoother keeps the estimates
unbiased).

Cost: one dot product per parameter tensor per step, kept on the device; the per-rank
sums travel in the epoch's one reduction of metrics, so no extra collective at all. With
one worker the two batch sizes coincide and nothing can be measured: the fields are None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NoiseEstimate:
    """One epoch's estimates; None where the data do not determine them."""

    local_sq_norm: float  # mean |G_small|^2 over steps and workers
    averaged_sq_norm: float  # mean |G_big|^2 over steps
    gradient_sq_norm: float  # |G|^2
    gradient_trace: float  # tr(Sigma), per sample
    noise_scale: float | None  # B_simple = tr(Sigma) / |G|^2; None unless both are positive


NOT_MEASURED = NoiseEstimate(math.nan, math.nan, math.nan, math.nan, None)
"""One worker's epoch, or a cell that does not measure: every field NaN (None in the records)."""


def noise_estimate(local_sq_norm: float, averaged_sq_norm: float, batch_small: int, batch_big: int) -> NoiseEstimate:
    """McCandlish et al.'s unbiased estimators from mean squared norms at two batch sizes."""
    if batch_big <= batch_small:
        raise ValueError(f"batch_big = {batch_big} must exceed batch_small = {batch_small}")
    gradient_sq_norm = (batch_big * averaged_sq_norm - batch_small * local_sq_norm) / (batch_big - batch_small)
    gradient_trace = (local_sq_norm - averaged_sq_norm) / (1 / batch_small - 1 / batch_big)
    ratio = gradient_trace / gradient_sq_norm if gradient_sq_norm > 0 and gradient_trace > 0 else None
    return NoiseEstimate(local_sq_norm, averaged_sq_norm, gradient_sq_norm, gradient_trace,
                         ratio if ratio is not None and math.isfinite(ratio) else None)


class GradientNoiseMeter:
    """Sums, on the device, each step's |local gradient|^2 and |averaged gradient|^2.

    The local norms are taken by a hook on each parameter, which autograd runs when the
    parameter's gradient is computed, before it is accumulated into .grad and so before
    Horovod's or DDP's own hook (on the accumulation) starts averaging it. (A parameter
    used twice in the forward pass, tied weights, would be counted in parts; no model here
    ties weights.) The averaged norm is read once the backend has averaged the
    gradients (Workers.synchronize) and a gradient scaler has unscaled them."""

    def __init__(self, model: Any, device: Any) -> None:
        import torch

        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self._local_parts: list[Any] = []
        # local sum, averaged sum, steps counted
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)
        self._handles = [p.register_hook(self._on_local_gradient) for p in self.parameters]

    def _on_local_gradient(self, grad: Any) -> None:
        flat = grad.detach().reshape(-1).float()
        self._local_parts.append(flat.dot(flat))

    def after_average(self, count: bool, scale: Any = None) -> None:
        """Called once per step between averaging and the update; `count` False (a partial last
        batch, whose size differs) drops the step. `scale`: the gradient scaler's scale, which the
        local gradients still carry."""
        import torch

        parts, self._local_parts = self._local_parts, []
        if not count or not parts:
            return
        local = torch.stack(parts).sum().double()
        grads = [p.grad for p in self.parameters if p.grad is not None]
        averaged = torch.nn.utils.get_total_norm(grads, norm_type=2.0).double().square()
        if scale is not None:
            local = local / scale.double().square()
        finite = torch.isfinite(local) & torch.isfinite(averaged)  # a step the scaler skips for overflow
        zero = torch.zeros((), dtype=torch.float64, device=local.device)
        self.totals += torch.stack([torch.where(finite, local, zero), torch.where(finite, averaged, zero),
                                    finite.double()])

    def discard(self) -> None:
        """Forget local norms of a backward pass that was not a training step (compilation warm-up)."""
        self._local_parts = []

    def take(self) -> Any:
        """This epoch's (local sum, averaged sum, steps) on the device; the meter starts over."""
        totals = self.totals.clone()
        self.totals.zero_()
        return totals

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def epoch_noise(local_sum_over_ranks: float, averaged_sum_over_ranks: float, steps_over_ranks: float,
                batch_small: int, world: int) -> NoiseEstimate | None:
    """The epoch's estimate from the per-rank totals summed over the ranks (the averaged norm
    is the same on every rank, so its sum over ranks is world x its sum over steps)."""
    if world < 2 or steps_over_ranks <= 0:
        return None
    return noise_estimate(local_sum_over_ranks / steps_over_ranks, averaged_sum_over_ranks / steps_over_ranks,
                          batch_small, batch_small * world)
