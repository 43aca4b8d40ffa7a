"""Unit tests for jobs.train.data and the Fashion-MNIST download script's offline verification."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from jobs.train.data import (
    DATASETS,
    FASHION_MNIST_FILES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IdxFormatError,
    load_dataset,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- IDX writer

def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file holding uint8 `array`: magic 0x0000 08 ndim, big-endian uint32 dims, then the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    content = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


def fake_fashion_mnist(directory: Path, *, num_train: int = 30, num_val: int = 12, gzipped: bool = True) -> dict:
    """Small Fashion-MNIST-shaped IDX files in `directory`; returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, size=(num_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=num_train, dtype=np.uint8),
        "val_images": rng.integers(0, 256, size=(num_val, 28, 28), dtype=np.uint8),
        "val_labels": rng.integers(0, 10, size=num_val, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, :3] = [0, 255, 51]  # known pixels to check the /255 scaling
    for role, name in FASHION_MNIST_FILES.items():
        write_idx(directory / (name if gzipped else name.removesuffix(".gz")), arrays[role])
    return arrays


# ----------------------------------------------------------------------------- fashion_mnist

@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_shapes_values_and_labels(tmp_path: Path, gzipped: bool) -> None:
    arrays = fake_fashion_mnist(tmp_path / "fashion_mnist", gzipped=gzipped)
    splits = load_dataset("fashion_mnist", tmp_path, seed=0)
    train_x, train_y = splits.train.tensors
    val_x, val_y = splits.val.tensors
    assert (splits.input_shape, splits.num_classes, splits.task) == ((1, 28, 28), 10, "classification")
    assert train_x.shape == (30, 1, 28, 28) and val_x.shape == (12, 1, 28, 28)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert train_x[0, 0, 0, :3].tolist() == pytest.approx([0.0, 1.0, 0.2])
    np.testing.assert_allclose(train_x[:, 0].numpy(), arrays["train_images"] / 255.0, rtol=1e-6)
    assert train_y.tolist() == arrays["train_labels"].tolist()
    assert val_y.tolist() == arrays["val_labels"].tolist()
    assert float(train_x.min()) >= 0.0 and float(train_x.max()) <= 1.0


def test_fashion_mnist_train_subset_takes_first_images_and_keeps_all_val(tmp_path: Path) -> None:
    arrays = fake_fashion_mnist(tmp_path / "fashion_mnist")
    splits = load_dataset("fashion_mnist", tmp_path, seed=0, train_subset=7)
    train_x, train_y = splits.train.tensors
    assert len(splits.train) == 7 and len(splits.val) == 12
    assert train_y.tolist() == arrays["train_labels"][:7].tolist()
    np.testing.assert_allclose(train_x[:, 0].numpy(), arrays["train_images"][:7] / 255.0, rtol=1e-6)


def test_fashion_mnist_subset_larger_than_data_raises(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "fashion_mnist")
    with pytest.raises(ValueError, match="train_subset=31 .* 30 training examples"):
        load_dataset("fashion_mnist", tmp_path, seed=0, train_subset=31)


def test_fashion_mnist_missing_file_gives_one_line_hint(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "fashion_mnist")
    (tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("fashion_mnist", tmp_path, seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"Fashion-MNIST not found in {tmp_path / 'fashion_mnist'}")
    assert "t10k-labels-idx1-ubyte.gz" in message and "train-images" not in message
    assert "snakemake download_fashion_mnist" in message


def test_fashion_mnist_missing_directory_gives_one_line_hint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found in .*copy the IDX files there"):
        load_dataset("fashion_mnist", tmp_path, seed=0)


def test_fashion_mnist_wrong_magic_names_file_and_expected_magic(tmp_path: Path) -> None:
    directory = tmp_path / "fashion_mnist"
    fake_fashion_mnist(directory)
    # A label file where the images should be: valid IDX, wrong kind.
    write_idx(directory / "train-images-idx3-ubyte.gz", np.zeros(30, dtype=np.uint8))
    with pytest.raises(IdxFormatError) as error:
        load_dataset("fashion_mnist", tmp_path, seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "0x00000801" in message and "expected 0x00000803" in message


def test_fashion_mnist_truncated_raw_file_names_file_and_sizes(tmp_path: Path) -> None:
    directory = tmp_path / "fashion_mnist"
    fake_fashion_mnist(directory, gzipped=False)
    raw_path = directory / "t10k-images-idx3-ubyte"
    raw_path.write_bytes(raw_path.read_bytes()[:-100])
    expected_size = 16 + 12 * 28 * 28
    with pytest.raises(IdxFormatError) as error:
        load_dataset("fashion_mnist", tmp_path, seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert str(raw_path) in message and "truncated" in message
    assert f"{expected_size - 100} bytes, expected {expected_size}" in message


def test_fashion_mnist_truncated_gzip_names_file(tmp_path: Path) -> None:
    directory = tmp_path / "fashion_mnist"
    fake_fashion_mnist(directory)
    gz_path = directory / "train-labels-idx1-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:-12])
    with pytest.raises(IdxFormatError, match=r"train-labels-idx1-ubyte\.gz: not a complete gzip file"):
        load_dataset("fashion_mnist", tmp_path, seed=0)


def test_fashion_mnist_truncated_header_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "fashion_mnist"
    fake_fashion_mnist(directory)
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(IDX_LABELS_MAGIC.to_bytes(4, "big")))
    with pytest.raises(IdxFormatError, match=r"train-labels-idx1-ubyte\.gz: truncated: 4 bytes, expected a 8-byte"):
        load_dataset("fashion_mnist", tmp_path, seed=0)


def test_fashion_mnist_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    directory = tmp_path / "fashion_mnist"
    fake_fashion_mnist(directory)
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="30 images but .* 29 labels"):
        load_dataset("fashion_mnist", tmp_path, seed=0)


def test_idx_writer_matches_standard_magic_numbers() -> None:
    assert idx_bytes(np.zeros((2, 3, 3)))[:4] == IDX_IMAGES_MAGIC.to_bytes(4, "big")
    assert idx_bytes(np.zeros(2))[:4] == IDX_LABELS_MAGIC.to_bytes(4, "big")


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_split_and_range(tmp_path: Path) -> None:
    splits = load_dataset("digits", tmp_path, seed=0)
    train_x, train_y = splits.train.tensors
    _val_x, val_y = splits.val.tensors
    assert (splits.input_shape, splits.num_classes, splits.task) == ((1, 8, 8), 10, "classification")
    assert len(splits.train) + len(splits.val) == 1797
    assert len(splits.val) == 360  # ceil(0.2 * 1797)
    assert train_x.shape[1:] == (1, 8, 8) and train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert float(train_x.min()) == 0.0 and float(train_x.max()) == 1.0
    assert set(train_y.tolist()) == set(range(10)) and set(val_y.tolist()) == set(range(10))


def test_digits_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    first = load_dataset("digits", tmp_path, seed=3).train.tensors[0]
    again = load_dataset("digits", tmp_path, seed=3).train.tensors[0]
    other = load_dataset("digits", tmp_path, seed=4).train.tensors[0]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_digits_train_subset(tmp_path: Path) -> None:
    full = load_dataset("digits", tmp_path, seed=0)
    subset = load_dataset("digits", tmp_path, seed=0, train_subset=100)
    assert len(subset.train) == 100 and len(subset.val) == len(full.val)
    assert torch.equal(subset.train.tensors[0], full.train.tensors[0][:100])


# ----------------------------------------------------------------------------- linear (Lab 1)

def test_linear_data_follows_lab1_process(tmp_path: Path) -> None:
    splits = load_dataset("linear", tmp_path, seed=0)
    x, y = (t.numpy().ravel() for t in splits.train.tensors)
    assert (splits.input_shape, splits.num_classes, splits.task) == ((1,), 0, "regression")
    assert splits.train.tensors[0].shape == (100, 1) and splits.train.tensors[1].shape == (100, 1)
    assert splits.train.tensors[1].dtype == torch.float32
    assert len(splits.val) == 100
    assert x.min() >= 0.0 and x.max() <= 10.0
    slope, intercept = np.polyfit(x, y, 1)
    # Residual y - 10 x - 2 = 10 * N(0, 1): slope standard error ~ 10 / (sqrt(100) * 2.9) ~ 0.35.
    assert slope == pytest.approx(10.0, abs=1.5)
    assert intercept == pytest.approx(2.0, abs=8.0)
    residual = y - (10.0 * x + 2.0)
    assert np.std(residual) == pytest.approx(10.0, rel=0.25)  # the noise is on x, scaled by w_gen


def test_linear_data_deterministic_by_seed_and_val_independent_of_size(tmp_path: Path) -> None:
    a = load_dataset("linear", tmp_path, seed=5)
    b = load_dataset("linear", tmp_path, seed=5)
    c = load_dataset("linear", tmp_path, seed=6)
    bigger = load_dataset("linear", tmp_path, seed=5, train_subset=1000)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    assert len(bigger.train) == 1000
    assert torch.equal(bigger.train.tensors[0][:100], a.train.tensors[0])
    assert torch.equal(bigger.val.tensors[1], a.val.tensors[1])
    assert not torch.equal(a.train.tensors[0], a.val.tensors[0])


# ----------------------------------------------------------------------------- synthetic images

def test_synthetic_images_sizes_and_determinism(tmp_path: Path) -> None:
    default = load_dataset("synthetic_images", tmp_path, seed=0)
    assert len(default.train) == 2048 and len(default.val) == 256
    assert (default.input_shape, default.num_classes) == ((3, 32, 32), 10)
    small = load_dataset("synthetic_images", tmp_path, seed=0, train_subset=64)
    images, labels = small.train.tensors
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and int(labels.min()) >= 0 and int(labels.max()) <= 9
    assert torch.equal(small.val.tensors[0], default.val.tensors[0])
    again = load_dataset("synthetic_images", tmp_path, seed=0, train_subset=64)
    other = load_dataset("synthetic_images", tmp_path, seed=1, train_subset=64)
    assert torch.equal(images, again.train.tensors[0])
    assert not torch.equal(images, other.train.tensors[0])


# ----------------------------------------------------------------------------- errors

def test_unknown_dataset_raises_with_name_and_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'cifar10'.*" + ", ".join(DATASETS)):
        load_dataset("cifar10", tmp_path, seed=0)


def test_non_positive_train_subset_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_subset.*got 0"):
        load_dataset("linear", tmp_path, seed=0, train_subset=0)


# ----------------------------------------------------------------------------- download script, offline

@pytest.fixture(scope="module")
def download_script() -> ModuleType:
    path = REPO / "workflow" / "scripts" / "download_fashion_mnist.py"
    spec = importlib.util.spec_from_file_location("download_fashion_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only: main() runs as __main__ or under Snakemake
    return module


def test_download_verification_accepts_valid_idx_gzip(tmp_path: Path, download_script: ModuleType) -> None:
    fake_fashion_mnist(tmp_path)
    for name in FASHION_MNIST_FILES.values():
        assert download_script.idx_gzip_problem(tmp_path / name) is None


def test_download_verification_rejects_corrupt_files(tmp_path: Path, download_script: ModuleType) -> None:
    fake_fashion_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    assert "not a complete gzip file" in download_script.idx_gzip_problem(images)

    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(b"<html>404 Not Found</html>")
    assert "not a gzip file" in download_script.idx_gzip_problem(labels)

    wrong_kind = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(wrong_kind, np.zeros((2, 28, 28), dtype=np.uint8))
    assert "expected 0x00000801" in download_script.idx_gzip_problem(wrong_kind)

    assert "No such file" in download_script.idx_gzip_problem(tmp_path / "t10k-images-idx3-ubyte.gz.missing")


def test_downloaded_file_must_match_published_md5(tmp_path: Path, download_script: ModuleType) -> None:
    fake_fashion_mnist(tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    problem = download_script.downloaded_file_problem(tmp_path / name, name)
    assert problem is not None and "expected bb300cfdad3c16e7a12a480ee83cd310" in problem


def test_download_skips_present_valid_files_without_network(
    tmp_path: Path, download_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_fashion_mnist(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def no_network(url: str, destination: Path) -> None:
        raise AssertionError(f"tried to fetch {url}")

    monkeypatch.setattr(download_script, "fetch", no_network)
    download_script.download_fashion_mnist(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_download_leaves_no_file_when_download_is_invalid(
    tmp_path: Path, download_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_fashion_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    fetched: list[str] = []

    def fake_fetch(url: str, destination: Path) -> None:
        fetched.append(url)
        destination.write_bytes(b"not the file")

    monkeypatch.setattr(download_script, "fetch", fake_fetch)
    with pytest.raises(SystemExit, match="t10k-images-idx3-ubyte.gz: MD5"):
        download_script.download_fashion_mnist(tmp_path)
    assert fetched == [download_script.BASE_URL + "t10k-images-idx3-ubyte.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n in FASHION_MNIST_FILES.values() if n != "t10k-images-idx3-ubyte.gz"
    )


def test_snakemake_output_to_directory(download_script: ModuleType) -> None:
    class FakeSnakemake:
        def __init__(self, output: list[str]) -> None:
            self.output = output

    as_files = FakeSnakemake(["data/fashion_mnist/train-images-idx3-ubyte.gz"])
    as_directory = FakeSnakemake(["data/fashion_mnist"])
    assert download_script.out_dir_from_snakemake(as_files) == Path("data/fashion_mnist")
    assert download_script.out_dir_from_snakemake(as_directory) == Path("data/fashion_mnist")


# ----------------------------------------------------------------------------- markov_text

def test_markov_text_is_next_token_prediction_of_seeded_sequences() -> None:
    from jobs.plan.datasets import MARKOV_CONTEXT, MARKOV_NUM_VAL, MARKOV_VOCAB
    from jobs.train.data import load_dataset

    splits = load_dataset("markov_text", Path("unused"), seed=3, train_subset=64)
    inputs, targets = splits.train.tensors
    assert inputs.shape == targets.shape == (64, MARKOV_CONTEXT) and inputs.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # the targets are the inputs shifted by one
    assert len(splits.val) == MARKOV_NUM_VAL and splits.num_classes == MARKOV_VOCAB
    assert int(inputs.max()) < MARKOV_VOCAB and int(inputs.min()) >= 0
    again = load_dataset("markov_text", Path("unused"), seed=3, train_subset=64).train.tensors[0]
    other = load_dataset("markov_text", Path("unused"), seed=4, train_subset=64).train.tensors[0]
    assert torch.equal(inputs, again) and not torch.equal(inputs, other)
    more = load_dataset("markov_text", Path("unused"), seed=3, train_subset=128)
    assert torch.equal(more.val.tensors[0], splits.val.tensors[0])  # validation does not move with the subset


def test_the_entropy_rate_is_the_loss_of_the_chains_own_predictions_on_its_sequences() -> None:
    """The closed form against what it stands for: the cross-entropy of the true next-token
    probabilities over a long sample, and the stationary distribution against token counts."""
    from jobs.plan.datasets import entropy_rate, markov_chain, markov_sequences

    transitions, stationary = markov_chain()
    tokens = markov_sequences(np.random.default_rng(11), transitions, stationary, 4000, 64)
    previous, following = tokens[:, :-1].ravel(), tokens[:, 1:].ravel()
    observed_loss = float(np.mean(-np.log(transitions[previous, following])))
    assert observed_loss == pytest.approx(entropy_rate(transitions, stationary), rel=0.01)
    frequencies = np.bincount(tokens.ravel(), minlength=len(stationary)) / tokens.size
    np.testing.assert_allclose(frequencies, stationary, atol=0.005)
    # A chain whose rows are uniform has the uniform entropy, ln V, and no better predictor.
    uniform = np.full((4, 4), 0.25)
    assert entropy_rate(uniform, np.full(4, 0.25)) == pytest.approx(np.log(4))
