"""The user's own model and data: `model: "package.module:function"` and `dataset: ...` in a study.

Where the user's code is found, imported, fingerprinted and tried before anything is
submitted (docs/your_model.md). The plan calls `check_model` and `probe_dataset` at parse
time; the training job calls `load_callable` to build the very same objects.

A model function takes the study's `model_args` as keyword arguments and returns a
torch.nn.Module. A data function takes `dataset_args` and returns `(train, val)`, each a
pair of tensors `(inputs, targets)` or a torch Dataset of such pairs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
IMPORT_PATH_FORM = "package.module:function"


class UserCodeError(ValueError):
    """The user's code cannot be used as it is; the message says why, in one line."""


def is_import_path(name: str) -> bool:
    return IMPORT_PATH.fullmatch(name) is not None


def add_to_python_path(directories: Iterable[str | Path]) -> None:
    """Make the directories importable in this process, first in line (the config's python_path)."""
    for directory in reversed([str(Path(d).resolve()) for d in directories]):
        if directory not in sys.path:
            sys.path.insert(0, directory)


def load_callable(path: str) -> Callable[..., Any]:
    if not is_import_path(path):
        raise UserCodeError(f"{path!r} is not an import path of the form {IMPORT_PATH_FORM}")
    module_name, attribute = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module may raise anything while importing
        raise UserCodeError(f"{path!r} does not import: {one_line(error)}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise UserCodeError(f"{path!r}: module {module_name} has no {attribute!r}")
    if not callable(function):
        raise UserCodeError(f"{path!r} is a {type(function).__name__}, not a function")
    return function


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def call(path: str, args: Mapping[str, Any]) -> Any:
    function = load_callable(path)
    try:
        return function(**args)
    except Exception as error:
        raise UserCodeError(f"{path!r} raised {one_line(error)} when called with {dict(args)!r}") from None


def source_files(path: str) -> list[Path]:
    """The files a callable's behaviour comes from: its whole top-level package when it is in
    one (a helper module may change), else its module's file."""
    module = sys.modules[path.split(":")[0]]
    top = sys.modules[module.__name__.split(".")[0]]
    package_dirs = [Path(p) for p in getattr(top, "__path__", [])]
    if package_dirs:
        return sorted(file for directory in package_dirs for file in directory.rglob("*.py"))
    source = inspect.getsourcefile(module)
    return [Path(source)] if source else []


@functools.cache
def source_digest(path: str) -> str:
    """A hash of the callable's source files (source_files): a change to them makes a new run."""
    load_callable(path)
    digest = hashlib.sha256()
    for file in source_files(path):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DataProbe:
    """What the plan needs to know of a user's data set without training on it."""

    train_samples: int
    val_samples: int
    input_shape: tuple[int, ...]  # one sample's, without the batch dimension
    target_shape: tuple[int, ...]
    input_dtype: str  # torch's name of it: float32, int64, ...
    integer_targets: bool  # classes (cross-entropy, accuracy) rather than values (regression)
    tensors: bool  # both splits are (inputs, targets) tensors, which can live on the device


def as_dataset(split: Any, path: str, role: str) -> Any:
    """A split as a torch Dataset: a pair of tensors becomes a TensorDataset."""
    import torch
    from torch.utils.data import Dataset, TensorDataset

    if isinstance(split, Dataset):
        if not hasattr(split, "__len__"):
            raise UserCodeError(f"{path!r}: the {role} Dataset has no len(); an iterable-style Dataset is not "
                                "supported (a scaling study shards by index)")
        return split
    if isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split):
        inputs, targets = split
        if len(inputs) != len(targets):
            raise UserCodeError(f"{path!r}: {role} inputs hold {len(inputs)} samples but targets {len(targets)}")
        return TensorDataset(inputs, targets)
    raise UserCodeError(f"{path!r} must return (train, val), each (inputs, targets) tensors or a torch Dataset; "
                        f"its {role} is a {type(split).__name__}")


def user_splits(path: str, args: Mapping[str, Any]) -> tuple[Any, Any]:
    returned = call(path, args)
    if not (isinstance(returned, (tuple, list)) and len(returned) == 2):
        raise UserCodeError(f"{path!r} must return (train, val); it returned a {type(returned).__name__}")
    train, val = (as_dataset(split, path, role) for split, role in zip(returned, ("train", "val")))
    for dataset, role in ((train, "train"), (val, "val")):
        if len(dataset) == 0:
            raise UserCodeError(f"{path!r}: the {role} split is empty")
    return train, val


def first_sample(dataset: Any, path: str) -> tuple[Any, Any]:
    import torch

    sample = dataset[0]
    if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
        raise UserCodeError(f"{path!r}: a sample must be an (input, target) pair; got a {type(sample).__name__}")
    inputs, target = (torch.as_tensor(part) for part in sample)
    return inputs, target


@functools.cache
def _probe_dataset(path: str, args_json: str) -> DataProbe:
    from torch.utils.data import TensorDataset

    train, val = user_splits(path, json.loads(args_json))
    inputs, target = first_sample(train, path)
    return DataProbe(train_samples=len(train), val_samples=len(val), input_shape=tuple(inputs.shape),
                     target_shape=tuple(target.shape), input_dtype=str(inputs.dtype).removeprefix("torch."),
                     integer_targets=not target.is_floating_point(),
                     tensors=isinstance(train, TensorDataset) and isinstance(val, TensorDataset))


def probe_dataset(path: str, args: Mapping[str, Any]) -> DataProbe:
    """Calls the data function once per (path, args) in this process and reads its first sample."""
    return _probe_dataset(path, canonical_json(args))


def canonical_json(args: Mapping[str, Any]) -> str:
    return json.dumps(args, sort_keys=True)


def build_user_model(path: str, args: Mapping[str, Any]) -> Any:
    from torch import nn

    model = call(path, args)
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"{path!r} must return a torch.nn.Module; it returned a {type(model).__name__}")
    return model


@functools.cache
def _check_model(path: str, args_json: str, input_shape: tuple[int, ...] | None, input_dtype: str) -> None:
    import torch

    with torch.device("meta"):  # no memory, no weights: only the structure and the shapes
        model = build_user_model(path, json.loads(args_json))
        if input_shape is None:
            return
        try:
            model(torch.zeros((2, *input_shape), dtype=getattr(torch, input_dtype)))
        except Exception as error:
            raise UserCodeError(f"{path!r} does not take inputs shaped (batch, {', '.join(map(str, input_shape))}): "
                                f"{one_line(error)}") from None


def check_model(path: str, args: Mapping[str, Any], input_shape: tuple[int, ...] | None,
                input_dtype: str = "float32") -> None:
    """Builds the model on the meta device and, given the data's input shape, runs it on a
    batch of two meta tensors: a model that cannot take the data fails here, not on a node."""
    _check_model(path, canonical_json(args), input_shape, input_dtype)
