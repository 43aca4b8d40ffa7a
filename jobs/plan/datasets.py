"""The sizes of the data sets, without loading them (or torch): what the plan checks
batch sizes and subsets against, and what jobs/train/data.py builds."""

from __future__ import annotations

import math

import numpy as np

DATASETS = ("linear", "digits", "fashion_mnist", "synthetic_images")

LINEAR_NUM_POINTS = 100  # Lab 1's points, unless train_subset asks for more
DIGITS_NUM_IMAGES = 1797  # scikit-learn's load_digits()
DIGITS_VAL_FRACTION = 0.2
FASHION_MNIST_NUM_TRAIN = 60_000
# Fashion-MNIST's IDX files by role, as Zalando publishes them (the workflow names them
# at parse time, so they live here, apart from the torch code that reads them).
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "val_images": "t10k-images-idx3-ubyte.gz",
    "val_labels": "t10k-labels-idx1-ubyte.gz",
}
SYNTHETIC_NUM_TRAIN = 2048

# Training samples of each data set. digits: train_test_split puts ceil(20 %) of the
# images into validation.
TRAIN_SET_SIZES = {
    "linear": LINEAR_NUM_POINTS,
    "digits": DIGITS_NUM_IMAGES - math.ceil(DIGITS_NUM_IMAGES * DIGITS_VAL_FRACTION),
    "fashion_mnist": FASHION_MNIST_NUM_TRAIN,
    "synthetic_images": SYNTHETIC_NUM_TRAIN,
}
# These are generated: train_subset sets how many samples there are, with no upper limit.
GENERATED_DATASETS = ("linear", "synthetic_images")


# Lab 1's points: x ~ U(0, 10), y = w_gen * (x + N(0, 1)) + b_gen; the noise is on x, before scaling.
LINEAR_W_GEN = 10.0
LINEAR_B_GEN = 2.0


def linear_points(rng: np.random.Generator, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(0.0, 10.0, size=num_points)
    y = LINEAR_W_GEN * (x + rng.normal(0.0, 1.0, size=num_points)) + LINEAR_B_GEN
    return x, y


def linear_splits(seed: int, num_train: int = LINEAR_NUM_POINTS) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """((x, y) to train on, (x, y) to validate on) of the linear data set with this seed. Separate
    streams, so the validation points do not change with the number of training points."""
    train_rng, val_rng = np.random.default_rng(seed).spawn(2)
    return linear_points(train_rng, num_train), linear_points(val_rng, LINEAR_NUM_POINTS)
