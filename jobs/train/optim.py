"""The optimizer and the learning-rate schedule of a cell.

The schedule is a pure function of the training progress (epochs from 0, fractional
within an epoch), so a resumed run follows exactly the same learning rates.
"""

from __future__ import annotations

import bisect
import math

import torch

from jobs.plan.params import TrainParams


def learning_rate(params: TrainParams, epoch_progress: float) -> float:
    """Gradual warmup (Goyal et al. 2017) from the base lr to the scaled lr, then the schedule:
    constant; step (x lr_decay_factor at each of lr_decay_epochs passed); cosine (from the
    scaled lr at the end of warmup to 0 at the last epoch, Loshchilov and Hutter 2017)."""
    target = params.scaled_lr()
    if params.warmup_epochs > 0 and epoch_progress < params.warmup_epochs:
        return params.lr + (target - params.lr) * epoch_progress / params.warmup_epochs
    if params.lr_schedule == "step":
        passed = bisect.bisect_right(params.lr_decay_epochs, epoch_progress)
        return target * params.lr_decay_factor ** passed
    if params.lr_schedule == "cosine":
        span = params.epochs - params.warmup_epochs
        done = min(1.0, (epoch_progress - params.warmup_epochs) / span)
        return target * 0.5 * (1.0 + math.cos(math.pi * done))
    return target


def make_optimizer(params: TrainParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    lr = learning_rate(params, 0.0)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=params.momentum, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=params.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=params.weight_decay)
