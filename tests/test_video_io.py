"""mgnt_hf.video_io and mgnt_hf.video_utils: writing/decoding videos (PyAV), loading video datasets, the clip
transform, checking, batching with mgnt_hf.data's with_pixel_transform and collate_examples."""

import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mgnt_hf.data import collate_examples, with_pixel_transform
from mgnt_hf.video_io import (
    FRAME_EXTENSIONS,
    VIDEO_EXTENSIONS,
    BadVideoError,
    VideoTransform,
    check_videos,
    decode_video,
    load_video_dataset,
    load_video_folder,
    resolve_video_columns,
    select_listed_clips,
)
from mgnt_hf.video_utils import write_video

torch.set_num_threads(1)


def moving_square(num_frames=8, size=16, channels=None, value=220, background=20):
    """uint8 `[T, size, size]` (or `[..., channels]`): a 4x4 square moving one pixel right per frame."""
    video = np.full((num_frames, size, size), background, dtype=np.uint8)
    for t in range(num_frames):
        video[t, 4:8, t:t + 4] = value
    return video if channels is None else np.repeat(video[..., None], channels, axis=-1)


def counting_video(num_frames=10, size=8, channels=1):
    """uint8 `[T, size, size, C]` whose frame t is filled with the value 10 * t."""
    return np.repeat(np.arange(num_frames, dtype=np.uint8)[:, None, None, None] * 10, size, 1).repeat(size, 2) \
        .repeat(channels, 3)


def write_frame_folder(folder, video):
    """Frames `[T, H, W]` -> folder/1.png ... folder/T.png (no zero padding, so only natural order is right)."""
    folder.mkdir(parents=True)
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(folder / f"{t + 1}.png")
    return folder


def mean_abs_error(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ----------------------------------------------------------------------------------------------
# write_video / decode_video


def test_extension_lists():
    assert set(VIDEO_EXTENSIONS) == {".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif"}
    assert set(FRAME_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def test_gif_round_trip_is_exact(tmp_path):
    rgb = moving_square(channels=3)
    rgb[..., 1] //= 2  # a real colour, not gray
    write_video(rgb, tmp_path / "clip.gif", fps=8)
    decoded = decode_video(str(tmp_path / "clip.gif"))
    assert decoded.shape == (8, 16, 16, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, rgb)
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.info["loop"] == 0 and gif.info["duration"] == 120  # 1/8 s, in GIF's 1/100 s units


def test_grayscale_gif_reads_back_as_rgb_with_exact_values(tmp_path):
    gray = moving_square()
    write_video(gray, tmp_path / "gray.gif")
    decoded = decode_video(str(tmp_path / "gray.gif"))
    np.testing.assert_array_equal(decoded, np.repeat(gray[..., None], 3, axis=-1))


def test_mp4_round_trip_is_close_and_keeps_the_motion(tmp_path):
    video = moving_square()
    write_video(video, tmp_path / "clip.mp4", fps=8)
    decoded = decode_video(str(tmp_path / "clip.mp4"))
    assert decoded.shape == (8, 16, 16, 3) and decoded.dtype == np.uint8  # grayscale written as RGB
    assert mean_abs_error(decoded, video[..., None]) < 2.0
    leftmost_bright_column = (decoded[..., 0] > 128).any(axis=1).argmax(axis=1)
    np.testing.assert_array_equal(leftmost_bright_column, np.arange(8))


@pytest.mark.parametrize("extension", [".webm", ".avi"])
def test_other_lossy_containers_round_trip_closely(tmp_path, extension):
    video = moving_square(channels=3)
    write_video(video, tmp_path / f"clip{extension}")
    decoded = decode_video(str(tmp_path / f"clip{extension}"))
    assert decoded.shape == (8, 16, 16, 3)
    assert mean_abs_error(decoded, video) < 3.0


def test_mkv_is_lossless_and_keeps_one_channel(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(5, 9, 7, 1), dtype=np.uint8)  # odd sizes are fine for FFV1
    rgb = rng.integers(0, 256, size=(5, 9, 7, 3), dtype=np.uint8)
    write_video(gray, tmp_path / "gray.mkv")
    write_video(rgb, tmp_path / "rgb.mkv")
    np.testing.assert_array_equal(decode_video(str(tmp_path / "gray.mkv")), gray)
    np.testing.assert_array_equal(decode_video(str(tmp_path / "rgb.mkv")), rgb)


def test_write_video_accepts_float_frames_and_pil_frames(tmp_path):
    video = moving_square()
    write_video(video.astype(np.float32) / 255.0, tmp_path / "float.mkv")
    write_video([Image.fromarray(frame) for frame in video], tmp_path / "pil.mkv")
    np.testing.assert_array_equal(decode_video(str(tmp_path / "float.mkv"))[..., 0], video)
    np.testing.assert_array_equal(decode_video(str(tmp_path / "pil.mkv"))[..., 0], video)


def test_write_video_rejects_bad_extension_fps_odd_size_and_paths(tmp_path):
    video = moving_square()
    with pytest.raises(ValueError, match=r"'\.png' not supported.*\.gif.*\.mp4"):
        write_video(video, tmp_path / "clip.png")
    with pytest.raises(ValueError, match="fps must be a finite number > 0, got 0"):
        write_video(video, tmp_path / "clip.gif", fps=0)
    with pytest.raises(ValueError, match=r"even height and width, got 15x16"):
        write_video(video[:, :15], tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="takes frames"):
        write_video(str(tmp_path / "clip.gif"), tmp_path / "copy.gif")


def test_decode_video_bytes_dict_matches_the_file(tmp_path):
    path = write_video(moving_square(), tmp_path / "clip.mp4")
    from_bytes = decode_video({"path": "clip.mp4", "bytes": (tmp_path / "clip.mp4").read_bytes()})
    from_path = decode_video({"path": path, "bytes": None})
    np.testing.assert_array_equal(from_bytes, from_path)
    assert from_bytes.shape == (8, 16, 16, 3)


def test_decode_video_arrays_lists_tensors_and_images():
    video = moving_square()  # [T, H, W]
    expected = video[..., None]
    np.testing.assert_array_equal(decode_video(video), expected)
    np.testing.assert_array_equal(decode_video(video.tolist()), expected)  # what datasets gives for Array3D
    np.testing.assert_array_equal(decode_video(list(video)), expected)  # a list of frame arrays
    np.testing.assert_array_equal(decode_video(torch.from_numpy(video)), expected)
    np.testing.assert_array_equal(decode_video(video.astype(np.float64) / 255.0), expected)
    np.testing.assert_array_equal(decode_video([Image.fromarray(frame) for frame in video]), expected)
    rgb = moving_square(channels=3)
    np.testing.assert_array_equal(decode_video(rgb.tolist()), rgb)  # Array4D
    mixed = [Image.fromarray(video[0]), Image.fromarray(rgb[1])]  # one RGB frame makes the clip RGB
    np.testing.assert_array_equal(decode_video(mixed), rgb[:2])


@pytest.mark.parametrize("value, message", [
    (np.zeros((4, 8, 8, 2), np.uint8), r"C in \(1, 3\), got shape \[4, 8, 8, 2\]"),
    (np.zeros((8, 8), np.uint8), r"got shape \[8, 8\]$"),
    (np.zeros((0, 8, 8), np.uint8), "is empty"),
    (np.full((2, 4, 4), 300), r"8-bit values in \[0, 255\], got \[300, 300\]"),
    (np.full((2, 4, 4), 2.0), r"float pixels must be in \[0, 1\]"),
    (np.full((2, 4, 4), np.nan), r"float pixels must be in \[0, 1\]"),
    ([np.zeros((4, 4)), np.zeros((5, 4))], "frames do not form one array"),
    ([Image.new("L", (4, 4)), Image.new("L", (5, 4))], "different sizes"),
    (3.5, "unsupported value of type float"),
    ({"path": None, "bytes": None}, "neither bytes nor a path"),
])
def test_decode_video_rejects_bad_values_with_reason_and_row(value, message):
    with pytest.raises(BadVideoError, match=message) as info:
        decode_video(value, row=7)
    assert "row 7" in str(info.value)


def test_decode_video_frame_folder_in_natural_order(tmp_path):
    video = counting_video(num_frames=12, channels=1)[..., 0]
    folder = write_frame_folder(tmp_path / "clip", video)
    (folder / "notes.txt").write_text("not a frame")
    np.testing.assert_array_equal(decode_video(str(folder)), video[..., None])  # 10.png after 9.png


def test_decode_video_missing_file_corrupt_file_and_bad_frames(tmp_path):
    with pytest.raises(OSError, match=r"missing\.mp4 .*does not exist"):
        decode_video(str(tmp_path / "missing.mp4"))
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 10)
    with pytest.raises(BadVideoError, match=r"cannot read video file .*corrupt\.mp4 \(row 3\)"):
        decode_video(str(tmp_path / "corrupt.mp4"), row=3)
    with pytest.raises(BadVideoError, match=r"cannot read video at row 2: "):
        decode_video({"path": None, "bytes": b"junk" * 20}, row=2)
    folder = write_frame_folder(tmp_path / "frames", moving_square(num_frames=3))
    (folder / "2.png").write_bytes(b"truncated")
    with pytest.raises(BadVideoError, match=r"frame folder .*frames.*bad frame.*2\.png"):
        decode_video(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadVideoError, match="holds no frame images"):
        decode_video(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------------------
# Loading


def write_class_tree(root):
    """root/<class>/<clip>: 'jump' has an mp4 and a frame folder, 'walk' a gif and a nested frame folder."""
    (root / "jump").mkdir(parents=True)
    write_video(moving_square(), root / "jump" / "b_clip.mp4")
    write_frame_folder(root / "jump" / "a_frames", moving_square(num_frames=5))
    (root / "walk").mkdir()
    write_video(moving_square(num_frames=6), root / "walk" / "clip.gif")
    write_frame_folder(root / "walk" / "group" / "clip2", moving_square(num_frames=4))
    (root / "walk" / "readme.txt").write_text("ignored")


def test_load_video_folder_mixes_files_and_frame_folders(tmp_path):
    write_class_tree(tmp_path)
    dataset = load_video_dataset(train_data_dir=str(tmp_path))
    assert dataset.features["label"].names == ["jump", "walk"]
    relative = [str(Path(path).relative_to(tmp_path)) for path in dataset["video"]]
    assert relative == ["jump/a_frames", "jump/b_clip.mp4", "walk/clip.gif", "walk/group/clip2"]
    assert dataset["label"] == [0, 0, 1, 1]
    assert [decode_video(path).shape[0] for path in dataset["video"]] == [5, 8, 6, 4]


def test_load_video_folder_without_class_folders_has_no_labels(tmp_path):
    write_video(moving_square(), tmp_path / "clip10.mkv")
    write_video(moving_square(), tmp_path / "clip9.mkv")
    dataset = load_video_folder(str(tmp_path))
    assert dataset.column_names == ["video"]
    assert [Path(path).name for path in dataset["video"]] == ["clip9.mkv", "clip10.mkv"]


def test_load_video_folder_errors(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        load_video_dataset(train_data_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="holds no clips"):
        load_video_dataset(train_data_dir=str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder .*empty_class holds no clips"):
        load_video_dataset(train_data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one of"):
        load_video_dataset()
    with pytest.raises(ValueError, match="exactly one of"):
        load_video_dataset(dataset_name="a", train_data_dir="b")


def array3d_dataset(videos, labels):
    num_frames, height, width = videos[0].shape
    features = datasets.Features({"video": datasets.Array3D((num_frames, height, width), "uint8"),
                                  "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict({"video": list(videos), "label": labels}, features=features)


def test_load_saved_array3d_dataset_and_dataset_dict_split(tmp_path):
    videos = [moving_square(), moving_square(value=100)]
    array3d_dataset(videos, [0, 1]).save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": array3d_dataset(videos, [0, 1]), "test": array3d_dataset(videos[:1], [1])}) \
        .save_to_disk(str(tmp_path / "dict"))

    single = load_video_dataset(dataset_name=str(tmp_path / "single"))
    assert isinstance(single.features["video"], datasets.Array3D)
    np.testing.assert_array_equal(decode_video(single[1]["video"]), videos[1][..., None])
    test = load_video_dataset(dataset_name=str(tmp_path / "dict"), split="test")
    assert len(test) == 1 and test["label"] == [1]
    with pytest.raises(ValueError, match=r"split 'validation' not in .*available splits: \['test', 'train'\]"):
        load_video_dataset(dataset_name=str(tmp_path / "dict"), split="validation")
    with pytest.raises(ValueError, match=r"video column 'clip' not in the dataset; available columns: \['video', 'lab"):
        load_video_dataset(dataset_name=str(tmp_path / "single"), video_column="clip")
    with pytest.raises(OSError, match="does not exist"):
        load_video_dataset(dataset_name=str(tmp_path / "nowhere"))


def test_load_saved_video_feature_is_cast_to_undecoded_and_read_from_bytes(tmp_path):
    write_video(moving_square(), tmp_path / "a.gif")
    write_video(moving_square(num_frames=3), tmp_path / "b.gif")
    values = [{"path": name, "bytes": (tmp_path / name).read_bytes()} for name in ("a.gif", "b.gif")]
    dataset = datasets.Dataset.from_dict({"clip": values, "label": [0, 1]},
                                         features=datasets.Features({"clip": datasets.Video(),
                                                                     "label": datasets.Value("int64")}))
    dataset.save_to_disk(str(tmp_path / "saved"))

    loaded = load_video_dataset(dataset_name=str(tmp_path / "saved"))
    assert loaded.features["clip"] == datasets.Video(decode=False)
    assert resolve_video_columns(loaded, None, "label") == ("clip", "label")
    assert [decode_video(value).shape for value in loaded["clip"]] == [(8, 16, 16, 3), (3, 16, 16, 3)]


def test_load_local_videofolder_through_load_dataset(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "videos" / name).mkdir(parents=True)
        write_video(moving_square(num_frames=4), tmp_path / "videos" / name / f"{name}.mp4")
    dataset = load_video_dataset(dataset_name=str(tmp_path / "videos"), cache_dir=str(tmp_path / "cache"))
    assert dataset.features["video"] == datasets.Video(decode=False)  # datasets' builder gives Video(decode=True)
    assert dataset.features["label"].names == ["cat", "dog"]
    assert decode_video(dataset[1]["video"], row=1).shape == (4, 16, 16, 3)


def test_resolve_video_columns():
    dataset = datasets.Dataset.from_dict({"frames": [moving_square()], "y": [0]}, features=datasets.Features(
        {"frames": datasets.Array3D((8, 16, 16), "uint8"), "y": datasets.Value("int64")}))
    assert resolve_video_columns(dataset, label_column="y") == ("frames", "y")
    with pytest.raises(ValueError, match=r"label column 'label' not in the dataset; available columns: \['frames', "):
        resolve_video_columns(dataset, require_label=True)
    plain = datasets.Dataset.from_dict({"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match=r"cannot tell which column holds the videos \(columns: \['a', 'b'\]\)"):
        resolve_video_columns(plain)
    with pytest.raises(ValueError, match=r"video column 'c' not in the dataset"):
        resolve_video_columns(plain, "c")


def test_select_listed_clips_matches_file_names(tmp_path):
    dataset = datasets.Dataset.from_dict({"video": ["/d/HandstandPushups/v_HandStandPushups_g01_c01.avi",
                                                    "/d/Archery/v_Archery_g02_c01.avi",
                                                    "/d/Archery/v_Archery_g03_c01.avi"]})
    listing = tmp_path / "trainlist01.txt"
    listing.write_text("HandStandPushups/v_HandStandPushups_g01_c01.avi 37\nArchery/v_Archery_g03_c01.avi 3\n\n")
    kept = select_listed_clips(dataset, str(listing))
    assert [Path(path).name for path in kept["video"]] == ["v_HandStandPushups_g01_c01.avi",
                                                            "v_Archery_g03_c01.avi"]
    listing.write_text("Archery/v_Archery_g09_c01.avi\nArchery/v_Archery_g03_c01.avi\n")
    with pytest.raises(ValueError, match=r"1 of the 2 clips listed .* \(e\.g\. v_Archery_g09_c01\.avi\)"):
        select_listed_clips(dataset, str(listing))
    assert len(select_listed_clips(dataset, str(listing), allow_missing=True)) == 1
    arrays = array3d_dataset([moving_square()], [0])
    with pytest.raises(ValueError, match="needs clip paths in column 'video'"):
        select_listed_clips(arrays, str(listing))


# ----------------------------------------------------------------------------------------------
# VideoTransform


def frame_values(clip):
    """`[C, T, H, W]` in [-1, 1] -> the 8-bit value of each frame (frames are uniform)."""
    return [round(v) for v in ((clip[0, :, 0, 0] + 1) * 127.5).tolist()]


@pytest.mark.parametrize("clip_start, frame_stride, expected_frames", [
    ("start", 1, [0, 1, 2]),
    ("start", 2, [0, 2, 4]),
    ("center", 1, [3, 4, 5]),   # span 3 of 10 frames starts at (10 - 3) // 2 = 3
    ("center", 3, [1, 4, 7]),   # span 7 starts at (10 - 7) // 2 = 1
    ("start", 4, [0, 4, 8]),
])
def test_video_transform_picks_frames(clip_start, frame_stride, expected_frames):
    transform = VideoTransform(num_frames=3, num_channels=1, resolution=8, frame_stride=frame_stride,
                               clip_start=clip_start)
    clip = transform(counting_video(num_frames=10))
    assert frame_values(clip) == [10 * t for t in expected_frames]
    assert transform.frame_indices(10) == expected_frames


def test_video_transform_shape_range_and_resizing():
    video = moving_square(num_frames=8, size=16, channels=3)
    clip = VideoTransform(num_frames=4, num_channels=3, resolution=(8, 12), resize_mode="resize")(video)
    assert clip.shape == (3, 4, 8, 12) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    exact = VideoTransform(num_frames=8, num_channels=3, resolution=16)(video)
    torch.testing.assert_close(exact, torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1)
    padded = VideoTransform(num_frames=2, num_channels=1, resolution=20, resize_mode="pad")(video)
    assert padded.shape == (1, 2, 20, 20) and (padded[:, :, :2] == -1).all()


def test_video_transform_converts_channels_like_image_transform():
    gray = moving_square()
    to_rgb = VideoTransform(num_frames=2, num_channels=3, resolution=16)(gray)
    assert to_rgb.shape == (3, 2, 16, 16)
    assert torch.equal(to_rgb[0], to_rgb[1]) and torch.equal(to_rgb[1], to_rgb[2])
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    to_gray = VideoTransform(num_frames=2, num_channels=1, resolution=8)(rgb)
    expected = np.stack([np.asarray(Image.fromarray(frame).convert("L")) for frame in rgb])
    torch.testing.assert_close(to_gray[0], torch.from_numpy(expected).float() / 127.5 - 1)


def test_video_transform_random_crop_uses_one_offset_per_clip():
    torch.manual_seed(0)
    frame = np.random.default_rng(0).integers(0, 256, size=(16, 16), dtype=np.uint8)
    video = np.stack([frame] * 4)
    # (8, 4) from 16x16: resized to 8x8, then cropped at a random horizontal offset in 0..4.
    transform = VideoTransform(num_frames=4, num_channels=1, resolution=(8, 4), resize_mode="random_crop")
    clips = [transform(video) for _ in range(6)]
    for clip in clips:
        assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(1, 4))
    assert len({clip.numpy().tobytes() for clip in clips}) > 1  # the offset does change between clips


def test_video_transform_too_few_frames_names_the_shape_and_the_need():
    transform = VideoTransform(num_frames=16, num_channels=1, resolution=64)
    with pytest.raises(ValueError, match=r"video has 12 frames \[12, 64, 64, 1\]; need at least 16 "
                                         r"\(num_frames=16, frame_stride=1\)"):
        transform(np.zeros((12, 64, 64), np.uint8))
    strided = VideoTransform(num_frames=4, num_channels=1, resolution=8, frame_stride=3)
    with pytest.raises(ValueError, match=r"need at least 10 \(num_frames=4, frame_stride=3\)"):
        strided(counting_video(num_frames=9))
    assert strided(counting_video(num_frames=10)).shape == (1, 4, 8, 8)


def test_video_transform_random_flip_flips_whole_clips():
    torch.manual_seed(0)
    video = moving_square(num_frames=4)
    plain = VideoTransform(num_frames=4, num_channels=1, resolution=16)(video)
    transform = VideoTransform(num_frames=4, num_channels=1, resolution=16, random_flip=True)
    outcomes = []
    for _ in range(10):
        clip = transform(video)
        assert torch.equal(clip, plain) or torch.equal(clip, plain.flip(-1))
        outcomes.append(torch.equal(clip, plain))
    assert any(outcomes) and not all(outcomes)


@pytest.mark.parametrize("fields, message", [
    (dict(num_frames=0), "num_frames must be a positive integer, got 0"),
    (dict(frame_stride=0), "frame_stride must be a positive integer, got 0"),
    (dict(clip_start="end"), "clip_start must be one of 'start', 'center'; got 'end'"),
    (dict(num_channels=2), "num_channels must be 1 or 3, got 2"),
    (dict(resize_mode="stretch"), "resize_mode must be one of"),
    (dict(resolution=(8, 0)), "resolution must be a positive int"),
])
def test_video_transform_rejects_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        VideoTransform(**{"num_frames": 2, "num_channels": 1, "resolution": 8, **fields})


# ----------------------------------------------------------------------------------------------
# check_videos, with_pixel_transform, collate_examples


def mixed_dataset(tmp_path):
    """Row 0: a good gif path; row 1: a 3-frame gif (too short); row 2: a missing file; row 3: a good mp4."""
    paths = [write_video(moving_square(), tmp_path / "good.gif"),
             write_video(moving_square(num_frames=3), tmp_path / "short.gif"),
             str(tmp_path / "missing.mp4"),
             write_video(moving_square(), tmp_path / "good.mp4")]
    return datasets.Dataset.from_dict({"video": paths, "label": [0, 1, 1, 0]})


def test_check_videos_names_bad_rows(tmp_path):
    dataset = mixed_dataset(tmp_path)
    transform = VideoTransform(num_frames=4, num_channels=1, resolution=8)
    with pytest.raises(BadVideoError) as info:
        check_videos(dataset, "video", transform)
    message = str(info.value)
    assert "2 bad video(s)" in message
    assert "short.gif (row 1): video has 3 frames [3, 16, 16, 3]; need at least 4" in message
    assert "missing.mp4 (row 2) does not exist" in message
    assert "good" not in message


def test_check_videos_skips_bad_rows_with_warnings(tmp_path, caplog):
    dataset = mixed_dataset(tmp_path)
    transform = VideoTransform(num_frames=4, num_channels=1, resolution=8)
    with caplog.at_level(logging.WARNING, logger="mgnt_hf.video_io"):
        kept = check_videos(dataset, "video", transform, skip_bad_videos=True)
    assert [Path(path).name for path in kept["video"]] == ["good.gif", "good.mp4"]
    assert sum("skipping bad video" in record.message for record in caplog.records) == 2
    short_only = dataset.select([1])
    with pytest.raises(BadVideoError, match="all 1 videos are bad"):
        check_videos(short_only, "video", transform, skip_bad_videos=True)


def test_with_pixel_transform_and_collate_batch_array_videos():
    videos = [moving_square(), moving_square(value=100)]
    dataset = array3d_dataset(videos, [1, 0])
    transform = VideoTransform(num_frames=4, num_channels=3, resolution=8, resize_mode="resize")
    checked = check_videos(dataset, "video", transform)
    loader = DataLoader(with_pixel_transform(checked, transform, "video", "label"), batch_size=2,
                        collate_fn=collate_examples)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 3, 4, 8, 8)
    assert batch["class_labels"].tolist() == [1, 0] and batch["class_labels"].dtype == torch.long
    torch.testing.assert_close(batch["pixel_values"][1], transform(videos[1]))
    unlabeled = with_pixel_transform(checked, transform, "video")
    assert set(collate_examples([unlabeled[0]])) == {"pixel_values"}


def test_with_pixel_transform_skips_bad_videos_only_when_asked(tmp_path, caplog):
    dataset = mixed_dataset(tmp_path)
    transform = VideoTransform(num_frames=4, num_channels=1, resolution=8)
    with pytest.raises(BadVideoError, match="need at least 4"):
        with_pixel_transform(dataset, transform, "video", "label")[1]
    skipping = with_pixel_transform(dataset, transform, "video", "label", skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="mgnt_hf.data"):
        rows = [skipping[i] for i in range(4)]
        assert rows[1]["pixel_values"] is None and rows[2]["pixel_values"] is None
        assert any("skipping bad video: video file" in record.message and "short.gif" in record.message
                   for record in caplog.records)
        batch = collate_examples(rows)
    assert batch["pixel_values"].shape == (2, 1, 4, 8, 8) and batch["class_labels"].tolist() == [0, 0]
    assert any("dropped 2 bad example(s)" in record.message for record in caplog.records)
    with pytest.raises(ValueError, match="every example of a batch of 2 was bad"):
        collate_examples(rows[1:3])
