"""The optimizer and the learning-rate schedule of a cell.

The schedule is a pure function of the training progress (epochs from 0, fractional
within an epoch), so a resumed run follows exactly the same learning rates.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch

from jobs.plan.params import TrainParams


def learning_rate(params: TrainParams, epoch_progress: float) -> float:
    """Gradual warmup from 1/N of the scaled lr up to it (Goyal et al. 2017; Horovod's
    LearningRateWarmupCallback; the course's "starting from lr / N"), then the schedule:
    constant; step (x lr_decay_factor at each of lr_decay_epochs passed); cosine (from the
    scaled lr at the end of warmup to 0 at the last epoch, Loshchilov and Hutter 2017)."""
    target = params.scaled_lr()
    if params.warmup_epochs > 0 and epoch_progress < params.warmup_epochs:
        start = target / params.gpus  # the base lr when the scaling is linear
        return start + (target - start) * epoch_progress / params.warmup_epochs
    if params.lr_schedule == "step":
        passed = bisect.bisect_right(params.lr_decay_epochs, epoch_progress)
        return target * params.lr_decay_factor ** passed
    if params.lr_schedule == "cosine":
        span = params.epochs - params.warmup_epochs
        done = min(1.0, (epoch_progress - params.warmup_epochs) / span)
        return target * 0.5 * (1.0 + math.cos(math.pi * done))
    return target


def make_optimizer(params: TrainParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    lr, weights, decay = learning_rate(params, 0.0), model.parameters(), params.weight_decay
    if params.optimizer == "sgd":
        return torch.optim.SGD(weights, lr=lr, momentum=params.momentum, weight_decay=decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(weights, lr=lr, weight_decay=decay)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(weights, lr=lr, weight_decay=decay)
    if params.optimizer == "larc":
        return LARC(weights, lr=lr, momentum=params.momentum, weight_decay=decay,
                    trust_coefficient=params.trust_coefficient)
    import pytorch_optimizer  # only the cells that use it pay for its import

    if params.optimizer == "lars":
        return pytorch_optimizer.LARS(weights, lr=lr, momentum=params.momentum, weight_decay=decay,
                                      trust_coefficient=params.trust_coefficient)
    if params.optimizer == "lamb":
        # adam_debias: the bias corrections change only the length of m/sqrt(v), which the trust
        # ratio sets anyway; without it the library's first steps are 1/(1 - beta1^t) longer
        # than the paper's (10x at step 1). Coupled decay: w's decay inside the trust ratio, as there.
        return pytorch_optimizer.Lamb(weights, lr=lr, weight_decay=decay, weight_decouple=False, adam_debias=True)
    return pytorch_optimizer.NovoGrad(weights, lr=lr, weight_decay=decay)


class LARC(torch.optim.SGD):
    """LARS with LARC's trust clipping (apex.parallel.LARC, clip mode): each weight matrix or
    kernel's gradient, with its weight decay, is scaled by min(eta |w| / (|g| + wd |w|) / lr, 1)
    before torch's SGD step, so its lr is min(eta |w| / (|g| + wd |w|), lr). As in
    pytorch-optimizer's LARS, biases and norm weights (one dimension or none) take plain SGD
    without decay. Written here because no maintained package ships LARC without a
    dependency on torchvision (timm) or a CUDA build (apex); pytorch-optimizer's LARS has no
    clipping. Tensor operations only: no host synchronisation in the step."""

    # Defaults for every argument: Horovod's DistributedOptimizer builds its own instance from
    # the param groups alone, which carry these values.
    def __init__(self, params: Any, lr: float = 0.001, momentum: float = 0.0, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        for group in self.param_groups:
            group.setdefault("layer_weight_decay", weight_decay)
            group.setdefault("trust_coefficient", trust_coefficient)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            decay, eta, lr = group["layer_weight_decay"], group["trust_coefficient"], group["lr"]
            for weight in group["params"]:
                if weight.grad is None or weight.ndim <= 1:
                    continue
                weight_norm, grad_norm = torch.linalg.norm(weight), torch.linalg.norm(weight.grad)
                denominator = grad_norm + decay * weight_norm
                trust = torch.where((weight_norm > 0) & (denominator > 0), eta * weight_norm / denominator,
                                    torch.ones_like(weight_norm))
                local = torch.clamp(trust / lr, max=1.0) if lr > 0 else torch.ones_like(trust)
                weight.grad.add_(weight, alpha=decay).mul_(local)
        return super().step(closure)
