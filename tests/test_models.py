"""Unit tests for jobs.train.models: output shapes, WRN size and depth rule, Lab 1's starting point."""
from __future__ import annotations

import pytest
import torch

from jobs.train.models import MODELS, build_model

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
IMAGE_CLASSIFIERS = [name for name in MODELS if name != "gpt"]  # gpt reads token sequences


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", IMAGE_CLASSIFIERS)
@pytest.mark.parametrize("input_shape", IMAGE_SHAPES)
def test_classifier_output_shape(name: str, input_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, input_shape, 10, width=1, depth=10)
    model.train()  # batch norm in training mode needs more than one value per channel: batch of 3
    logits = model(torch.randn(3, *input_shape))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()
    model.eval()
    assert model(torch.randn(1, *input_shape)).shape == (1, 10)


def test_wide_resnet_default_depth_16_output_shape() -> None:
    model = build_model("wide_resnet", (1, 28, 28), 7)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_linear_regression_is_lab1_model_starting_at_zero() -> None:
    model = build_model("linear", (1,), 0)
    layer = model[-1]
    assert isinstance(layer, torch.nn.Linear)
    assert (layer.in_features, layer.out_features) == (1, 1)
    assert layer.weight.item() == 0.0
    assert layer.bias.item() == 0.0
    assert count_parameters(model) == 2
    x = torch.linspace(0, 10, 5).reshape(-1, 1)
    assert torch.equal(model(x), torch.zeros(5, 1))


def test_linear_regression_gradient_moves_w_and_b() -> None:
    model = build_model("linear", (1,), 0)
    x = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([[12.0], [22.0]])
    torch.nn.functional.mse_loss(model(x), y).backward()
    layer = model[-1]
    assert layer.weight.grad.item() < 0  # the loss falls as w grows towards 10
    assert layer.bias.grad.item() < 0


def test_linear_classifier_is_logistic_regression_on_flattened_input() -> None:
    model = build_model("linear", (1, 8, 8), 10)
    assert count_parameters(model) == 64 * 10 + 10
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.parametrize("name", ["cnn", "wide_resnet"])
def test_image_models_regress_to_one_output_when_no_classes(name: str) -> None:
    model = build_model(name, (1, 8, 8), 0, depth=10)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 1)


def test_wide_resnet_parameter_count_grows_with_width() -> None:
    counts = [count_parameters(build_model("wide_resnet", (1, 28, 28), 10, width=k, depth=16)) for k in (1, 2, 4)]
    assert counts[0] < counts[1] < counts[2]
    # Conv weights dominate and scale with width squared: doubling k roughly quadruples the size.
    assert counts[2] > 3 * counts[1]


def test_wide_resnet_parameter_count_grows_with_depth() -> None:
    shallow = count_parameters(build_model("wide_resnet", (1, 8, 8), 10, depth=10))
    deep = count_parameters(build_model("wide_resnet", (1, 8, 8), 10, depth=16))
    assert shallow < deep


def test_wide_resnet_16_10_has_course_widths() -> None:
    model = build_model("wide_resnet", (1, 28, 28), 10, width=10, depth=16)
    conv_widths = {m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert conv_widths == {16, 160, 320, 640}
    assert model.head.in_features == 640
    residual_blocks = [m for m in model.modules() if type(m).__name__ == "WideBasicBlock"]
    assert len(residual_blocks) == 3 * 2


@pytest.mark.parametrize("depth", [15, 8, 4, 0, 17])
def test_wide_resnet_bad_depth_raises_with_value(depth: int) -> None:
    with pytest.raises(ValueError, match=rf"depth.*6n\+4.*got {depth}\b"):
        build_model("wide_resnet", (1, 28, 28), 10, depth=depth)


def test_unknown_model_raises_with_name_and_choices() -> None:
    with pytest.raises(ValueError, match=r"'resnet50'.*linear, cnn, wide_resnet"):
        build_model("resnet50", (1, 28, 28), 10)


def test_image_model_rejects_flat_input() -> None:
    with pytest.raises(ValueError, match=r"cnn.*\(1,\)"):
        build_model("cnn", (1,), 10)


@pytest.mark.parametrize("layers, heads, width", [(2, 2, 64), (1, 4, 32)])
def test_gpt_predicts_every_next_token_with_gpt2s_parameter_count(layers: int, heads: int, width: int) -> None:
    """GPT-2's count, from its definition: token and position embeddings, per block
    12 E^2 + 13 E (attention, MLP, two layer norms), a final layer norm; the output layer
    shares the token embedding. No dropout: training mode gives the same logits twice."""
    vocab, context = 16, 32
    model = build_model("gpt", (context,), vocab, model_args={"n_layer": layers, "n_head": heads, "n_embd": width})
    assert count_parameters(model) == vocab * width + context * width + layers * (12 * width**2 + 13 * width) \
        + 2 * width
    model.train()
    tokens = torch.randint(0, vocab, (3, context))
    logits = model(tokens)
    assert logits.shape == (3, context, vocab)
    assert torch.equal(logits, model(tokens))
