"""mgnt_hf.data and training/prepare_fashion_mnist.py: loading, checking, transforms, IDX files."""

import gzip
import importlib.util
import logging
import os
import struct
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mgnt_hf.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    BadImageError,
    ImageTransform,
    check_images,
    collate_examples,
    decode_image,
    id2label_from_dataset,
    load_image_dataset,
    load_image_folder,
    read_fashion_mnist,
    read_idx,
    resolve_columns,
    with_pixel_transform,
)

REPO = Path(__file__).resolve().parents[1]


def load_prepare_script():
    spec = importlib.util.spec_from_file_location("prepare_fashion_mnist", REPO / "training/prepare_fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.tobytes())


def write_fake_fashion_mnist(folder, num_train=5, num_test=3):
    rng = np.random.default_rng(0)
    names = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", num_train),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", num_test)}
    arrays = {}
    for split, (images_name, labels_name, count) in names.items():
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(folder / images_name, images)
        write_idx(folder / labels_name, labels)
        arrays[split] = (images, labels)
    return arrays


def make_image_folder(root, classes=("cat", "dog"), per_class=3, size=(10, 12), mode="RGB"):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode).save(
                root / name / f"{index}.png")
    return root


# ---------------------------------------------------------------------------------------------- IDX


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_bad_files(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        read_idx(tmp_path / "missing.gz")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="10 bytes"):
        read_idx(tmp_path / "short")


def test_read_fashion_mnist_missing_files_name_path_and_package(tmp_path):
    with pytest.raises(OSError, match=r"train-images-idx3-ubyte\.gz.*dataset-fashion-mnist"):
        read_fashion_mnist("train", str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        read_fashion_mnist("valid", str(tmp_path))


def test_prepare_fashion_mnist_writes_both_splits_with_class_names(tmp_path):
    arrays = write_fake_fashion_mnist(tmp_path)
    prepare = load_prepare_script()
    output = tmp_path / "out"
    prepare.main(["--output_dir", str(output), "--source_dir", str(tmp_path)])
    train = load_image_dataset(dataset_name=str(output), split="train")
    test = load_image_dataset(dataset_name=str(output), split="test")
    assert (len(train), len(test)) == (5, 3)
    assert train.features["label"].names == list(FASHION_MNIST_CLASSES)
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot" and FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    example = test[2]
    assert example["image"].mode == "L" and example["image"].size == (28, 28)
    assert np.array_equal(np.asarray(example["image"]), arrays["test"][0][2])
    assert example["label"] == 2
    assert id2label_from_dataset(train, "label")[7] == "Sneaker"


def test_prepare_fashion_mnist_missing_source_raises_oserror(tmp_path):
    with pytest.raises(OSError, match="dataset-fashion-mnist"):
        load_prepare_script().main(["--output_dir", str(tmp_path / "out"), "--source_dir", str(tmp_path)])


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_files_have_the_official_shape():
    images, labels = read_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert set(np.unique(labels).tolist()) == set(range(10))


# ---------------------------------------------------------------------------------------------- loading


def test_image_folder_gives_sorted_class_labels(tmp_path):
    root = make_image_folder(tmp_path / "images", classes=("zebra", "ant"), per_class=2)
    dataset = load_image_dataset(train_data_dir=str(root))
    assert dataset.features["label"].names == ["ant", "zebra"]
    assert dataset["label"] == [0, 0, 1, 1]
    assert id2label_from_dataset(dataset, "label") == {0: "ant", 1: "zebra"}
    assert dataset[0]["image"]["path"].endswith(os.path.join("ant", "0.png"))


def test_image_folder_without_class_folders_raises(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a.png")
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_dataset(train_data_dir=str(root))


def test_image_folder_with_an_empty_class_raises(tmp_path):
    root = make_image_folder(tmp_path / "images")
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*holds no images"):
        load_image_folder(str(root))


def test_missing_sources_raise(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        load_image_dataset(train_data_dir=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="exactly one"):
        load_image_dataset()
    with pytest.raises(ValueError, match="exactly one"):
        load_image_dataset(dataset_name="x", train_data_dir="y")
    with pytest.raises(OSError, match="does not exist"):
        load_image_dataset(dataset_name=str(tmp_path / "nope"))


def test_saved_dataset_split_selection(tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    image = Image.new("L", (4, 4))
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [image], "label": [1]},
                                                                         features=features)})
    dataset.save_to_disk(tmp_path / "saved")
    assert len(load_image_dataset(dataset_name=str(tmp_path / "saved"))) == 1
    with pytest.raises(ValueError, match=r"split 'test'.*available splits: \['train'\]"):
        load_image_dataset(dataset_name=str(tmp_path / "saved"), split="test")


def test_resolve_columns_guesses_and_rejects():
    features = datasets.Features({"img": datasets.Image(), "target": datasets.Value("int64")})
    dataset = datasets.Dataset.from_dict({"img": [Image.new("L", (2, 2))], "target": [3]}, features=features)
    assert resolve_columns(dataset) == ("img", None)
    assert resolve_columns(dataset, label_column="target") == ("img", "target")
    with pytest.raises(ValueError, match=r"image column 'image' not in the dataset; available columns: \['img', 'target'\]"):
        resolve_columns(dataset, image_column="image")
    with pytest.raises(ValueError, match="label column 'label' not in"):
        resolve_columns(dataset, require_label=True)
    assert id2label_from_dataset(dataset, "target") == {0: "0", 1: "1", 2: "2", 3: "3"}


# ---------------------------------------------------------------------------------------------- bad images


def test_check_images_names_unreadable_files(tmp_path):
    root = make_image_folder(tmp_path / "images")
    (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    dataset = load_image_folder(str(root))
    with pytest.raises(ValueError, match=r"(?s)1 bad image.*broken\.png"):
        check_images(dataset, "image")


def test_check_images_catches_truncated_and_unsupported_mode(tmp_path):
    root = make_image_folder(tmp_path / "images")
    data = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((4, 4), dtype=np.float32), mode="F").save(root / "cat" / "float.tiff")
    with pytest.raises(ValueError, match=r"2 bad image") as error:
        check_images(load_image_folder(str(root)), "image")
    assert "truncated.png" in str(error.value)
    assert "float.tiff has unsupported mode 'F'" in str(error.value)


def test_skip_bad_images_drops_them_with_a_warning(tmp_path, caplog):
    root = make_image_folder(tmp_path / "images")
    (root / "dog" / "broken.png").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        dataset = check_images(load_image_folder(str(root)), "image", skip_bad_images=True)
    assert len(dataset) == 6
    assert "broken.png" in caplog.text
    assert all("broken" not in value["path"] for value in dataset["image"])


def test_runtime_bad_image_raises_naming_the_file_or_is_dropped(tmp_path):
    root = make_image_folder(tmp_path / "images")
    (root / "dog" / "broken.png").write_bytes(b"garbage")
    dataset = load_image_folder(str(root))
    broken = [i for i, value in enumerate(dataset["image"]) if value["path"].endswith("broken.png")][0]
    transform = ImageTransform(num_channels=3, resolution=16, resize_mode="resize")
    strict = with_pixel_transform(dataset, transform, "image", "label")
    with pytest.raises(BadImageError, match="broken.png"):
        strict[broken]
    lenient = with_pixel_transform(dataset, transform, "image", "label", skip_bad=True)
    batch = collate_examples([lenient[0], lenient[broken]])
    assert batch["pixel_values"].shape == (1, 3, 16, 16)
    assert batch["class_labels"].tolist() == [0]
    with pytest.raises(ValueError, match="every example of a batch"):
        collate_examples([lenient[broken]])


# ---------------------------------------------------------------------------------------------- transforms


def test_pad_centres_28_to_32_and_scales_to_minus_one_one():
    array = np.full((28, 28), 255, dtype=np.uint8)
    array[0, 0] = 0
    pixels = ImageTransform(num_channels=1, resolution=32, resize_mode="pad")(Image.fromarray(array, mode="L"))
    assert pixels.shape == (1, 32, 32) and pixels.dtype == torch.float32
    expected = torch.full((1, 32, 32), -1.0)
    expected[:, 2:30, 2:30] = 1.0
    expected[0, 2, 2] = -1.0
    assert torch.equal(pixels, expected)


def test_pad_rejects_images_larger_than_the_resolution():
    with pytest.raises(BadImageError, match="larger than the resolution"):
        ImageTransform(num_channels=1, resolution=16, resize_mode="pad")(Image.new("L", (20, 10)))


def test_channel_conversion():
    rgb = Image.fromarray(np.stack([np.full((4, 4), v, np.uint8) for v in (255, 0, 0)], axis=-1), mode="RGB")
    gray = ImageTransform(num_channels=1, resolution=4, resize_mode="resize")(rgb)
    assert gray.shape == (1, 4, 4)
    assert torch.allclose(gray, torch.full((1, 4, 4), 76 / 127.5 - 1))  # ITU-R 601 luma of pure red
    expanded = ImageTransform(num_channels=3, resolution=4, resize_mode="resize")(Image.new("L", (4, 4), 51))
    assert torch.equal(expanded, torch.full((3, 4, 4), 51 / 127.5 - 1))
    sixteen_bit = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert torch.equal(ImageTransform(1, 4, "resize")(sixteen_bit), torch.ones(1, 4, 4))


def test_center_crop_and_random_crop_shapes():
    image = Image.new("RGB", (40, 20))
    for mode in ("center_crop", "random_crop", "resize"):
        assert ImageTransform(3, (8, 12), mode)(image).shape == (3, 8, 12)


def test_random_flip_mirrors_or_keeps():
    array = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    transform = ImageTransform(1, 4, "pad", random_flip=True)
    plain = ImageTransform(1, 4, "pad")(Image.fromarray(array))
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        pixels = transform(Image.fromarray(array))
        if torch.equal(pixels, plain):
            seen.add("kept")
        else:
            assert torch.equal(pixels, plain.flip(-1))
            seen.add("mirrored")
    assert seen == {"kept", "mirrored"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_channels=2), "num_channels"),
    (dict(resolution=0), "resolution"),
    (dict(resize_mode="stretch"), "resize_mode"),
    (dict(pad_value=300), "pad_value"),
])
def test_transform_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageTransform(**kwargs)


def test_decode_image_accepts_paths_bytes_and_pil(tmp_path):
    Image.new("RGB", (3, 2), (1, 2, 3)).save(tmp_path / "a.png")
    from_path = decode_image(str(tmp_path / "a.png"))
    from_bytes = decode_image({"bytes": (tmp_path / "a.png").read_bytes(), "path": None})
    assert from_path.size == from_bytes.size == (3, 2)
    with pytest.raises(BadImageError, match="row 7"):
        decode_image({"bytes": b"xx", "path": None}, row=7)


def test_tokenizer_fingerprint_is_the_same_for_the_same_tokenizer_in_another_folder(tmp_path):
    # The token cache is keyed by this fingerprint: loading the tokenizer through another path (a relative
    # path, a copy of the repository) must reuse the tokens, while other weights must not.
    from conftest import make_tiny_vqvae

    from mgnt_hf import MGNTVQModel
    from mgnt_hf.tokenized_dataset import tokenizer_fingerprint

    make_tiny_vqvae().save_pretrained(tmp_path / "a")
    make_tiny_vqvae().save_pretrained(tmp_path / "copy" / "b")
    first, second = (MGNTVQModel.from_pretrained(tmp_path / name) for name in ("a", "copy/b"))
    assert first.config._name_or_path != second.config._name_or_path
    assert tokenizer_fingerprint(first) == tokenizer_fingerprint(second)
    assert tokenizer_fingerprint(make_tiny_vqvae(seed=1)) != tokenizer_fingerprint(first)
