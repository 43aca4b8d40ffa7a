"""The data sets a grid cell can train on, loaded by name, offline.

    from jobs.train.data import load_dataset
    splits = load_dataset("fashion_mnist", Path("data"), seed=0, train_subset=10_000)
    print(splits.input_shape, splits.num_classes, len(splits.train), len(splits.val))

Nothing here downloads: Fashion-MNIST is fetched beforehand by
workflow/scripts/download_fashion_mnist.py (on a node with internet).
"""
from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from jobs.plan.datasets import (
    DATASETS,
    DIGITS_VAL_FRACTION,
    FASHION_MNIST_FILES,
    LINEAR_NUM_POINTS,
    MARKOV_NUM_TRAIN,
    MARKOV_VOCAB,
    SYNTHETIC_NUM_TRAIN,
    linear_splits,
    markov_splits,
)
from jobs.plan.user_code import first_sample, is_import_path, user_splits

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DatasetSplits:
    train: Dataset
    val: Dataset
    input_shape: tuple[int, ...]  # one example, no batch dimension
    known_classes: int | None  # 0 for regression; None: a user's Dataset, counted only when asked
    task: Task

    @cached_property
    def num_classes(self) -> int:
        """What a built-in model's last layer needs. Counting a user's Dataset reads every sample,
        so it happens only when a built-in model is built on it, not for the user's own model."""
        return self.known_classes if self.known_classes is not None else count_classes(self.train, self.val)


def load_dataset(name: str, data_dir: Path, *, seed: int, train_subset: int | None = None,
                 args: dict[str, Any] | None = None) -> DatasetSplits:
    """Train and validation splits of data set `name` (built in, or the user's
    "package.module:function" called with `args`); the same seed gives the same tensors."""
    if train_subset is not None and train_subset < 1:
        raise ValueError(f"train_subset must be a positive number of examples or None, got {train_subset}")
    if is_import_path(name):
        return load_user_dataset(name, args or {}, train_subset=train_subset)
    if name == "linear":
        return load_linear(seed=seed, num_train=train_subset or LINEAR_NUM_POINTS)
    if name == "digits":
        return load_digits(seed=seed, train_subset=train_subset)
    if name == "fashion_mnist":
        return load_fashion_mnist(Path(data_dir) / "fashion_mnist", train_subset=train_subset)
    if name == "synthetic_images":
        return load_synthetic_images(seed=seed, num_train=train_subset or SYNTHETIC_NUM_TRAIN)
    if name == "markov_text":
        return load_markov_text(seed=seed, num_train=train_subset or MARKOV_NUM_TRAIN)
    raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


def _take_first(dataset_name: str, train_subset: int | None, num_available: int) -> int:
    if train_subset is None:
        return num_available
    if train_subset > num_available:
        raise ValueError(
            f"train_subset={train_subset} is more than the {num_available} training examples of {dataset_name}"
        )
    return train_subset


# ----------------------------------------------------------------------------- the user's own

def load_user_dataset(path: str, args: dict[str, Any], *, train_subset: int | None = None) -> DatasetSplits:
    """The splits the user's data function returns: tensors become TensorDatasets (served from
    the device), a Dataset stays one (served by a DataLoader). Integer targets are classes."""
    train, val = user_splits(path, args)
    num_train = _take_first(path, train_subset, len(train))
    if num_train < len(train):
        train = TensorDataset(*(t[:num_train] for t in train.tensors)) if isinstance(train, TensorDataset) \
            else Subset(train, range(num_train))
    inputs, target = first_sample(train, path)
    classification = not target.is_floating_point()
    return DatasetSplits(train=train, val=val, input_shape=tuple(inputs.shape),
                         known_classes=declared_classes(train, val) if classification else 0,
                         task="classification" if classification else "regression")


def declared_classes(*splits: Dataset) -> int | None:
    """The number of classes where it is cheap to know: tensors' largest target, or a Dataset's
    `classes` list (torchvision's convention); None where only reading every sample would tell."""
    if all(isinstance(split, TensorDataset) for split in splits):
        return count_classes(*splits)
    train = splits[0]
    classes = getattr(train.dataset if isinstance(train, Subset) else train, "classes", None)
    return len(classes) if isinstance(classes, (list, tuple)) and classes else None


def count_classes(*splits: Dataset) -> int:
    """1 + the largest class index in the targets: what a built-in model's last layer needs."""
    largest = 0
    for split in splits:
        if isinstance(split, TensorDataset):
            largest = max(largest, int(split.tensors[1].max()))
        else:
            largest = max(largest, *(int(torch.as_tensor(split[i][1]).max()) for i in range(len(split))))  # type: ignore[arg-type]
    return largest + 1


# ----------------------------------------------------------------------------- linear (Lab 1)

def _float32_column(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).reshape(-1, 1)


def load_linear(*, seed: int, num_train: int = LINEAR_NUM_POINTS) -> DatasetSplits:
    (train_x, train_y), (val_x, val_y) = linear_splits(seed, num_train)

    def as_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(_float32_column(x), _float32_column(y))

    return DatasetSplits(
        train=as_dataset(train_x, train_y),
        val=as_dataset(val_x, val_y),
        input_shape=(1,),
        known_classes=0,
        task="regression",
    )


# ----------------------------------------------------------------------------- digits (scikit-learn, bundled)



def load_digits(*, seed: int, train_subset: int | None = None) -> DatasetSplits:
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # N x 1 x 8 x 8, in [0, 1]
    labels = digits.target.astype(np.int64)
    train_images, val_images, train_labels, val_labels = train_test_split(
        images, labels, test_size=DIGITS_VAL_FRACTION, random_state=seed, stratify=labels
    )
    num_train = _take_first("digits", train_subset, len(train_labels))
    return DatasetSplits(
        train=TensorDataset(torch.from_numpy(train_images[:num_train]), torch.from_numpy(train_labels[:num_train])),
        val=TensorDataset(torch.from_numpy(val_images), torch.from_numpy(val_labels)),
        input_shape=tuple(images.shape[1:]),
        known_classes=10,
        task="classification",
    )


# ----------------------------------------------------------------------------- Fashion-MNIST (IDX files)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
FASHION_MNIST_NUM_CLASSES = 10
GZIP_SIGNATURE = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """A file that is not the IDX file it should be (wrong magic number, truncated, corrupt gzip)."""


def idx_magic_for(file_name: str) -> int:
    """The magic number an MNIST-style file name promises: idx3 for images, idx1 for labels."""
    if "idx3" in file_name:
        return IDX_IMAGES_MAGIC
    if "idx1" in file_name:
        return IDX_LABELS_MAGIC
    raise ValueError(f"cannot tell from its name whether {file_name} holds IDX images (idx3) or labels (idx1)")


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """The uint8 array in an IDX file, gzipped or not (told apart by content, not by name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_SIGNATURE:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise IdxFormatError(f"{path}: not a complete gzip file ({error})") from None
    return parse_idx(raw, expected_magic, source=str(path))


def parse_idx(raw: bytes, expected_magic: int, *, source: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes: a big-endian magic (0x0000 08 ndim for unsigned bytes), ndim big-endian uint32 dims, data."""
    if len(raw) < 4:
        raise IdxFormatError(f"{source}: truncated: {len(raw)} bytes, expected at least a 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise IdxFormatError(f"{source}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    num_dims = magic & 0xFF
    header_size = 4 + 4 * num_dims
    if len(raw) < header_size:
        raise IdxFormatError(
            f"{source}: truncated: {len(raw)} bytes, expected a {header_size}-byte header with {num_dims} dimensions"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=num_dims, offset=4))
    expected_size = header_size + math.prod(dims)
    if len(raw) != expected_size:
        problem = "truncated" if len(raw) < expected_size else "trailing bytes"
        raise IdxFormatError(
            f"{source}: {problem}: {len(raw)} bytes, expected {expected_size} for dimensions {'x'.join(map(str, dims))}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def find_idx_file(directory: Path, gz_name: str) -> Path | None:
    """The file itself, or its uncompressed twin (same name without .gz), whichever exists."""
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(directory: Path, *, train_subset: int | None = None) -> DatasetSplits:
    """Train = the first `train_subset` train images (all by default), val = the 10,000 t10k images."""
    directory = Path(directory)
    paths = {role: find_idx_file(directory, name) for role, name in FASHION_MNIST_FILES.items()}
    missing = [FASHION_MNIST_FILES[role] for role, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {directory} (missing {', '.join(missing)}): "
            "run `snakemake download_fashion_mnist` on a node with internet, or copy the IDX files there"
        )

    found = {role: path for role, path in paths.items() if path is not None}

    def split(images_role: str, labels_role: str, limit: int | None) -> TensorDataset:
        images = read_idx(found[images_role], IDX_IMAGES_MAGIC)
        labels = read_idx(found[labels_role], IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise IdxFormatError(
                f"{paths[images_role]} holds {len(images)} images but {paths[labels_role]} holds {len(labels)} labels"
            )
        count = _take_first("fashion_mnist", limit, len(labels))
        pixels = images[:count].astype(np.float32)
        pixels /= 255.0
        return TensorDataset(
            torch.from_numpy(pixels).unsqueeze(1),  # N x 1 x H x W
            torch.from_numpy(labels[:count].astype(np.int64)),
        )

    train = split("train_images", "train_labels", train_subset)
    val = split("val_images", "val_labels", None)
    return DatasetSplits(
        train=train,
        val=val,
        input_shape=tuple(train.tensors[0].shape[1:]),
        known_classes=FASHION_MNIST_NUM_CLASSES,
        task="classification",
    )


# ----------------------------------------------------------------------------- synthetic images (throughput only)

SYNTHETIC_NUM_VAL = 256
SYNTHETIC_IMAGE_SHAPE = (3, 32, 32)
SYNTHETIC_NUM_CLASSES = 10


def load_synthetic_images(*, seed: int, num_train: int = SYNTHETIC_NUM_TRAIN) -> DatasetSplits:
    """Standard-normal images with random labels: nothing to learn, only samples per second to measure."""

    def random_split(generator_seed: int, count: int) -> TensorDataset:
        generator = torch.Generator().manual_seed(generator_seed)
        images = torch.randn((count, *SYNTHETIC_IMAGE_SHAPE), generator=generator, dtype=torch.float32)
        labels = torch.randint(0, SYNTHETIC_NUM_CLASSES, (count,), generator=generator, dtype=torch.int64)
        return TensorDataset(images, labels)

    # Seeds derived with SeedSequence so that train and val never share a stream, whatever the seed.
    train_seed, val_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    return DatasetSplits(
        train=random_split(train_seed, num_train),
        val=random_split(val_seed, SYNTHETIC_NUM_VAL),
        input_shape=SYNTHETIC_IMAGE_SHAPE,
        known_classes=SYNTHETIC_NUM_CLASSES,
        task="classification",
    )


# ----------------------------------------------------------------------------- markov_text (a language model's data)

def load_markov_text(*, seed: int, num_train: int = MARKOV_NUM_TRAIN) -> DatasetSplits:
    """Next-token prediction on sequences of a Markov chain: inputs are a sequence's first
    MARKOV_CONTEXT tokens, targets the same shifted by one (jobs/plan/datasets.py)."""

    def as_dataset(tokens: np.ndarray) -> TensorDataset:
        sequences = torch.from_numpy(tokens)
        return TensorDataset(sequences[:, :-1].contiguous(), sequences[:, 1:].contiguous())

    train, val = markov_splits(seed, num_train)
    return DatasetSplits(train=as_dataset(train), val=as_dataset(val), input_shape=(train.shape[1] - 1,),
                         known_classes=MARKOV_VOCAB, task="classification")


# ----------------------------------------------------------------------------- on the device, sharded by index

def epoch_seed(seed: int, epoch: int) -> int:
    """One 64-bit seed per (seed, epoch), the same on every rank and after a resume."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


def epoch_shard(num_samples: int, world_size: int, rank: int, *, seed: int, epoch: int) -> torch.Tensor:
    """This rank's training-sample indices for one epoch, in the order it trains on them.

    Every rank draws the same permutation of all samples (it does not depend on the
    world size) and takes every world_size-th index from its rank on. So the ranks'
    shards are disjoint and equal in size, and the k-th batches of N ranks with batch
    B/N together hold exactly the k-th batch of one worker with batch B: data-parallel
    SGD then follows the single-worker trajectory. The num_samples % world_size
    samples at the end of the permutation sit this epoch out (a different few each
    epoch) rather than being padded with duplicates."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    order = torch.randperm(num_samples, generator=generator)
    usable = num_samples - num_samples % world_size
    return order[:usable][rank::world_size]


@dataclass(frozen=True)
class DeviceSplit:
    """One split's inputs and targets as tensors on the training device."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def of(cls, dataset: Dataset, device: torch.device) -> DeviceSplit:
        if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
            raise TypeError("data on the device needs a TensorDataset of (inputs, targets)")
        inputs, targets = dataset.tensors
        return cls(inputs.to(device), targets.to(device))

    def batches(self, indices: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, targets) of consecutive batches of `indices`, sliced on the device."""
        for start in range(0, len(indices), batch_size):
            chosen = indices[start:start + batch_size]
            yield self.inputs[chosen], self.targets[chosen]

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), size):
            yield self.inputs[start:start + size], self.targets[start:start + size]

    def shard(self, world_size: int, rank: int) -> DeviceSplit:
        """Every world_size-th sample from `rank` on (validation: each rank scores its share)."""
        return DeviceSplit(self.inputs[rank::world_size], self.targets[rank::world_size])


@dataclass(frozen=True)
class LoaderSplit:
    """One split served by a DataLoader: the samples stay in host memory and reach the device
    batch by batch (worker processes, pinned memory, non-blocking copies). The batches are
    the same as DeviceSplit's for the same indices, so both paths train alike."""

    dataset: Dataset
    device: torch.device
    workers: int

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _loader(self, dataset: Dataset, batch_size: int, order: list[int] | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda")
        for inputs, targets in loader:
            yield inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def batches(self, indices: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._loader(self.dataset, batch_size, indices.tolist())

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._loader(self.dataset, size, None)

    def shard(self, world_size: int, rank: int) -> LoaderSplit:
        from torch.utils.data import Subset

        if isinstance(self.dataset, TensorDataset):
            inputs, targets = self.dataset.tensors
            return LoaderSplit(TensorDataset(inputs[rank::world_size], targets[rank::world_size]), self.device,
                               self.workers)
        indices = range(rank, len(self.dataset), world_size)  # type: ignore[arg-type]
        return LoaderSplit(Subset(self.dataset, indices), self.device, self.workers)
