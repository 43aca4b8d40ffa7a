"""The sizes of the data sets, without loading them (or torch): what the plan checks
batch sizes and subsets against, and what jobs/train/data.py builds."""

from __future__ import annotations

import math

DATASETS = ("linear", "digits", "fashion_mnist", "synthetic_images")

LINEAR_NUM_POINTS = 100  # Lab 1's points, unless train_subset asks for more
DIGITS_NUM_IMAGES = 1797  # scikit-learn's load_digits()
DIGITS_VAL_FRACTION = 0.2
FASHION_MNIST_NUM_TRAIN = 60_000
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
