"""Lab 3's layer-wise adaptive optimizers: each step against the update rule written out in
numpy from the papers' formulas, and a saved state that continues exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from jobs.plan.params import TrainParams
from jobs.train.optim import LARC, learning_rate, make_optimizer


def one_layer(weight: np.ndarray, bias: np.ndarray) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


def step_with(optimizer: torch.optim.Optimizer, layer: torch.nn.Linear, grad_w: np.ndarray, grad_b: np.ndarray) -> None:
    layer.weight.grad = torch.from_numpy(grad_w.copy())
    layer.bias.grad = torch.from_numpy(grad_b.copy())
    optimizer.step()


RNG = np.random.default_rng(3)
W0, B0 = RNG.normal(size=(4, 3)), RNG.normal(size=4)
GW, GB = RNG.normal(size=(4, 3)), RNG.normal(size=4)


def trust_ratio(eta: float, decay: float) -> float:
    return eta * np.linalg.norm(W0) / (np.linalg.norm(GW) + decay * np.linalg.norm(W0))


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_lars_scales_each_weight_matrix_by_its_trust_ratio(decay):
    lr, eta = 0.5, 0.02
    layer = one_layer(W0, B0)
    params = TrainParams(optimizer="lars", lr=lr, lr_scaling="none", momentum=0.0, weight_decay=decay,
                         trust_coefficient=eta)
    step_with(make_optimizer(params, layer), layer, GW, GB)
    expected_w = W0 - lr * trust_ratio(eta, decay) * (GW + decay * W0)
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected_w, rtol=1e-12)
    # A bias takes plain SGD, without the ratio or the decay.
    np.testing.assert_allclose(layer.bias.detach().numpy(), B0 - lr * GB, rtol=1e-12)


@pytest.mark.parametrize(("lr", "eta", "clipped"), [(0.5, 0.02, False), (0.001, 0.02, True)])
def test_larc_clips_each_layers_lr_at_the_global_lr(lr, eta, clipped):
    decay = 0.01
    ratio = trust_ratio(eta, decay)
    assert (ratio > lr) == clipped  # the case is what its name says
    layer = one_layer(W0, B0)
    params = TrainParams(optimizer="larc", lr=lr, lr_scaling="none", momentum=0.0,
                         weight_decay=decay, trust_coefficient=eta)
    step_with(make_optimizer(params, layer), layer, GW, GB)
    layer_lr = min(ratio, lr)
    np.testing.assert_allclose(layer.weight.detach().numpy(), W0 - layer_lr * (GW + decay * W0), rtol=1e-12)
    np.testing.assert_allclose(layer.bias.detach().numpy(), B0 - lr * GB, rtol=1e-12)


def test_larc_with_momentum_and_the_clip_binding_is_sgd_with_weight_decay_on_the_matrices():
    lr, decay = 0.001, 0.01
    clipped, plain = one_layer(W0, B0), one_layer(W0, B0)
    larc = LARC(clipped.parameters(), lr=lr, momentum=0.9, weight_decay=decay, trust_coefficient=0.02)
    sgd = torch.optim.SGD([{"params": [plain.weight], "weight_decay": decay}, {"params": [plain.bias]}],
                          lr=lr, momentum=0.9)
    for scale in (1.0, 0.5, 2.0):
        step_with(larc, clipped, scale * GW, scale * GB)
        step_with(sgd, plain, scale * GW, scale * GB)
    np.testing.assert_allclose(clipped.weight.detach().numpy(), plain.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(clipped.bias.detach().numpy(), plain.bias.detach().numpy(), rtol=1e-12)


def test_lamb_takes_adams_direction_scaled_to_the_weights_norm():
    """LAMB (You et al. 2019, algorithm 2): r = m/sqrt(v) after bias correction, and each layer
    moves by lr x |w| along r / |r|. At the first step r = sign(g); at the second, with g2,
    m = (b1 (1 - b1) g1 + (1 - b1) g2) / (1 - b1^2), v likewise with squares."""
    lr, (beta1, beta2) = 0.01, (0.9, 0.999)
    layer = one_layer(W0, B0)
    optimizer = make_optimizer(TrainParams(optimizer="lamb", lr=lr, lr_scaling="none"), layer)
    step_with(optimizer, layer, GW, GB)
    expected = W0 - lr * np.linalg.norm(W0) * np.sign(GW) / np.linalg.norm(np.sign(GW))
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=1e-4)
    second = RNG.normal(size=GW.shape)
    step_with(optimizer, layer, second, GB)
    # rtol: the library adds its eps (1e-6) to sqrt(v) before the bias correction, the paper after.
    m = (beta1 * (1 - beta1) * GW + (1 - beta1) * second) / (1 - beta1**2)
    v = (beta2 * (1 - beta2) * GW**2 + (1 - beta2) * second**2) / (1 - beta2**2)
    r = m / np.sqrt(v)
    expected = expected - lr * np.linalg.norm(expected) * r / np.linalg.norm(r)
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected, rtol=1e-4)


def test_novograd_normalises_each_layers_gradient_by_its_norm():
    """NovoGrad's first step (Ginsburg et al. 2019): v = |g|^2 per layer, m = g / sqrt(v), so the
    layer moves by lr x g / |g|."""
    lr = 0.01
    layer = one_layer(W0, B0)
    step_with(make_optimizer(TrainParams(optimizer="novograd", lr=lr, lr_scaling="none"), layer), layer, GW, GB)
    np.testing.assert_allclose(layer.weight.detach().numpy(), W0 - lr * GW / np.linalg.norm(GW), rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["lars", "larc", "lamb", "novograd"])
def test_a_saved_optimizer_state_continues_exactly(optimizer):
    params = TrainParams(optimizer=optimizer, lr=0.05, lr_scaling="none", momentum=0.9,
                         weight_decay=0.01, trust_coefficient=0.02)
    gradients = [(RNG.normal(size=GW.shape), RNG.normal(size=GB.shape)) for _ in range(4)]
    straight = one_layer(W0, B0)
    through = make_optimizer(params, straight)
    for grad_w, grad_b in gradients:
        step_with(through, straight, grad_w, grad_b)

    first = one_layer(W0, B0)
    before = make_optimizer(params, first)
    for grad_w, grad_b in gradients[:2]:
        step_with(before, first, grad_w, grad_b)
    saved_weights, saved_state = copy.deepcopy(first.state_dict()), copy.deepcopy(before.state_dict())
    resumed = one_layer(W0, B0)
    resumed.load_state_dict(saved_weights)
    after = make_optimizer(params, resumed)
    after.load_state_dict(saved_state)
    for grad_w, grad_b in gradients[2:]:
        step_with(after, resumed, grad_w, grad_b)
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)


@pytest.mark.parametrize(("scaling", "top"), [("none", 0.1), ("linear", 0.4), ("sqrt", 0.2)])
def test_warmup_starts_at_one_nth_of_the_scaled_lr_whatever_the_scaling(scaling, top):
    params = TrainParams(lr=0.1, gpus=4, lr_scaling=scaling, warmup_epochs=2)
    assert learning_rate(params, 0.0) == pytest.approx(top / 4)
    assert learning_rate(params, 1.0) == pytest.approx((top / 4 + top) / 2)
    assert learning_rate(params, 2.0) == pytest.approx(top)
