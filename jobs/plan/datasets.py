"""The sizes of the data sets, without loading them (or torch): what the plan checks
batch sizes and subsets against, and what jobs/train/data.py builds."""

from __future__ import annotations

import math

import numpy as np

DATASETS = ("linear", "digits", "fashion_mnist", "synthetic_images", "markov_text")

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
# markov_text: token sequences of a fixed Markov chain (the "language", the same for every
# seed) over a small vocabulary; the seed draws which sequences. A model reads MARKOV_CONTEXT
# tokens and predicts each next one; its best possible validation loss is the entropy rate.
MARKOV_VOCAB = 16
MARKOV_CONTEXT = 32
MARKOV_NUM_TRAIN = 4096  # sequences
MARKOV_NUM_VAL = 512
MARKOV_CONCENTRATION = 0.3  # of the Dirichlet rows: below 1, each token has a few likely successors
MARKOV_CHAIN_SEED = 20161  # fixes the chain itself

# Training samples of each data set. digits: train_test_split puts ceil(20 %) of the
# images into validation.
TRAIN_SET_SIZES = {
    "linear": LINEAR_NUM_POINTS,
    "digits": DIGITS_NUM_IMAGES - math.ceil(DIGITS_NUM_IMAGES * DIGITS_VAL_FRACTION),
    "fashion_mnist": FASHION_MNIST_NUM_TRAIN,
    "synthetic_images": SYNTHETIC_NUM_TRAIN,
    "markov_text": MARKOV_NUM_TRAIN,
}
# These are generated: train_subset sets how many samples there are, with no upper limit.
GENERATED_DATASETS = ("linear", "synthetic_images", "markov_text")


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


def markov_chain(vocab: int = MARKOV_VOCAB, concentration: float = MARKOV_CONCENTRATION,
                 seed: int = MARKOV_CHAIN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(P, pi): the transition matrix, P[i, j] = Pr(next token j | token i), each row drawn from a
    symmetric Dirichlet, and its stationary distribution pi (pi P = pi, summing to 1)."""
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(vocab, concentration), size=vocab)
    eigenvalues, eigenvectors = np.linalg.eig(transitions.T)
    stationary = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1.0))])
    return transitions, stationary / stationary.sum()


def entropy_rate(transitions: np.ndarray, stationary: np.ndarray) -> float:
    """H = -sum_i pi_i sum_j P_ij ln P_ij, in nats: the expected cross-entropy, per token, of the
    best possible next-token prediction (the chain's own P), the floor of a model's loss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(transitions > 0, transitions * np.log(transitions), 0.0)
    return float(-(stationary * terms.sum(axis=1)).sum())


def markov_sequences(rng: np.random.Generator, transitions: np.ndarray, stationary: np.ndarray, count: int,
                     length: int) -> np.ndarray:
    """count x (length + 1) tokens: the first drawn from pi (so every position is in the stationary
    regime), each next one from its predecessor's row of P."""
    cumulative = np.cumsum(transitions, axis=1)
    tokens = np.empty((count, length + 1), dtype=np.int64)
    tokens[:, 0] = rng.choice(len(stationary), size=count, p=stationary)
    for position in range(1, length + 1):
        draws = rng.random(count)[:, None]
        rows = cumulative[tokens[:, position - 1]]
        tokens[:, position] = np.minimum((rows < draws).sum(axis=1), len(stationary) - 1)
    return tokens


def markov_splits(seed: int, num_train: int = MARKOV_NUM_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) token sequences of markov_text, from separate streams of this seed."""
    transitions, stationary = markov_chain()
    train_rng, val_rng = np.random.default_rng(seed).spawn(2)
    return (markov_sequences(train_rng, transitions, stationary, num_train, MARKOV_CONTEXT),
            markov_sequences(val_rng, transitions, stationary, MARKOV_NUM_VAL, MARKOV_CONTEXT))
