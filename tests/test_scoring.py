"""`keras_adtrs.score`: inputs of every kind, determinism, batch independence, errors."""

import io
import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_adtrs
from keras_adtrs import reporting
from keras_adtrs.data import images as image_io
from keras_adtrs.data.images import ImageReadError
from keras_adtrs.data import image_crops
from keras_adtrs.models import scoring
from conftest import random_score_head

CROPS = 4


@pytest.fixture(scope="module")
def model():
    return random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None))


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("scoring")
    path = folder / "c.jpg"
    path.write_bytes(_jpeg(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)))
    return [
        rng.integers(0, 256, (80, 100, 3), dtype=np.uint8),  # array
        _png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),  # encoded bytes
        str(path),  # file path
        rng.integers(0, 256, (40, 40), dtype=np.uint8),  # grayscale, smaller than the crop
        rng.uniform(0, 255, (70, 120, 4)).astype(np.float32),  # float RGBA
    ]


def test_batch_independent_and_deterministic(model, images):
    batch = keras_adtrs.score(model, images, crops=CROPS, batch_size=6)
    assert batch.shape == (5,) and batch.dtype == np.float32
    alone = np.array([keras_adtrs.score(model, [image], crops=CROPS, batch_size=6)[0] for image in images])
    reversed_ = keras_adtrs.score(model, images[::-1], crops=CROPS, batch_size=6)[::-1]
    again = keras_adtrs.score(model, images, crops=CROPS, batch_size=6)
    np.testing.assert_allclose(alone, batch, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reversed_, batch, rtol=0, atol=1e-5)
    np.testing.assert_allclose(again, batch, rtol=0, atol=1e-5)
    # Duplicated inside one batch: the same score at both positions.
    twice = keras_adtrs.score(model, [images[0], images[1], images[0]], crops=CROPS, batch_size=6)
    np.testing.assert_allclose(twice[[0, 2]], batch[[0, 0]], rtol=0, atol=1e-5)


def test_bucketed_calls_are_batch_invariant(model, images):
    """Calls padded to bucket sizes (powers of two up to batch_size): the same image
    scores the same alone, in batches of other sizes and in other orders."""
    reference = keras_adtrs.score(model, images, crops=CROPS, batch_size=32)
    # oneDNN may pick another convolution algorithm for another batch size: float32 rounding of
    # a few 1e-5 of the score (measured up to 1.4e-5 relative). A score that depended on the
    # batch's content would differ by far more.
    tolerance = 1e-4 * (reference.max() - reference.min())
    assert tolerance > 0
    for batch_size in (1, 3, 6, 8, 32):
        for order in (slice(None), slice(None, None, -1)):
            scores = keras_adtrs.score(model, images[order], crops=CROPS, batch_size=batch_size)[order]
            np.testing.assert_allclose(scores, reference, rtol=0, atol=tolerance, err_msg=f"batch_size {batch_size}")
    for i, image in enumerate(images):
        for crops in (1, 3):  # alone: one call of 1 (bucket 1) or 3 crops (bucket 4)
            alone = keras_adtrs.score(model, [image], crops=crops)[0]
            within = keras_adtrs.score(model, [images[(i + 1) % len(images)], image], crops=crops)[1]
            assert abs(alone - within) <= tolerance, (i, crops)


def test_calls_are_padded_to_bucket_sizes(model):
    shapes = []

    class Spy:
        crop_size = 64

        def predict_on_batch(self, crops):
            shapes.append(len(crops))
            return model.predict_on_batch(crops)

    images = [np.full((64, 64, 3), i, np.uint8) for i in range(8)]
    keras_adtrs.score(Spy(), images, crops=1)  # 8 one-crop images: one call of 8, not 32
    assert shapes == [8]
    shapes.clear()
    keras_adtrs.score(Spy(), images * 5, crops=1, batch_size=32)  # 40 crops: 32, then 8
    assert shapes == [32, 8]
    shapes.clear()
    keras_adtrs.score(Spy(), images[:5], crops=1, batch_size=6)  # 5 crops: bucket 6
    assert shapes == [6]
    assert scoring.bucket_sizes(32) == (1, 2, 4, 8, 16, 32) and scoring.bucket_sizes(6) == (1, 2, 4, 6)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        keras_adtrs.score(model, images, batch_size=0)


def test_single_image_and_grid_mean(model, images):
    single = keras_adtrs.score(model, images[0], crops=CROPS)
    crops = image_crops.image_crops(images[0], 64, CROPS)
    direct = np.asarray(model.predict_on_batch(crops)).mean()
    assert single.shape == (1,)
    assert single[0] == pytest.approx(direct, abs=1e-5)


def test_grid_crops_graph_cuts_the_same_pixels_as_the_ops_one_by_one():
    """`score` cuts images with one compiled graph: the same pixels as the eager ops, one graph for every size."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow crop ops")
    import tensorflow as tf

    from keras_adtrs.data.crops_tensorflow import compiled_grid_crops, grid_crops

    rng = np.random.default_rng(5)
    for shape in ((80, 100, 3), (40, 50, 3), (64, 64, 3), (300, 70, 3)):  # larger, upscaled, exact, tall
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        cut = image_crops.image_crops(image, 64, 9)
        assert cut.shape == (9, 64, 64, 3) and cut.dtype == np.float32
        np.testing.assert_array_equal(cut, grid_crops(tf.constant(image), 64, 9).numpy(), err_msg=str(shape))
    floats = rng.uniform(0, 255, (70, 90, 3)).astype(np.float32)
    np.testing.assert_array_equal(image_crops.image_crops(floats, 64, 4), grid_crops(tf.constant(floats), 64, 4).numpy())
    # one trace for images of every size
    assert compiled_grid_crops(64, 9, tf.uint8).experimental_get_tracing_count() == 1


def test_array_and_file_inputs_agree(model, tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (72, 72, 4), dtype=np.uint8)
    gray16 = (rng.integers(0, 65536, (70, 66))).astype(np.uint16)
    (tmp_path / "rgba.png").write_bytes(_png(rgba))
    (tmp_path / "gray16.png").write_bytes(_png(gray16))
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    from_files = keras_adtrs.score(model, [str(tmp_path / "rgba.png"), tmp_path / "gray16.png"], crops=CROPS)
    from_arrays = keras_adtrs.score(model, [rgba, gray16], crops=CROPS)
    np.testing.assert_allclose(from_files, from_arrays, rtol=0, atol=1e-5)


def test_sixteen_bit_png_decodes_like_arrays(tmp_path):
    values = np.array([[0, 255, 256, 1000, 65280, 65535]], np.uint16)
    decoded = image_io.load_image(_png(values))
    np.testing.assert_array_equal(decoded[..., 0], [[0, 0, 1, 3, 255, 255]])
    np.testing.assert_array_equal(decoded, image_io.array_to_rgb8(values))


def test_array_conversions():
    assert image_io.array_to_rgb8(np.zeros((5, 6))).shape == (5, 6, 3)
    assert image_io.array_to_rgb8(np.full((2, 2, 1), 300.0)).max() == 255
    assert image_io.array_to_rgb8(np.full((2, 2, 3), 7, np.int64)).dtype == np.uint8
    with pytest.raises(ImageReadError, match="shape"):
        image_io.array_to_rgb8(np.zeros((4, 4, 2)))
    with pytest.raises(ImageReadError, match="NaN"):
        image_io.array_to_rgb8(np.full((4, 4), np.nan))
    with pytest.raises(ImageReadError, match=r"\[0, 255\]"):
        image_io.array_to_rgb8(np.full((4, 4), -1, np.int32))


def test_unreadable_inputs_raise_naming_them(model, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        keras_adtrs.score(model, [str(bad)])
    with pytest.raises(ImageReadError, match="cannot read"):
        image_io.load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageReadError, match="empty"):
        image_io.load_image(b"")
    with pytest.raises(ImageReadError, match="image #3"):
        image_io.load_image(b"\xff\xd8\xff garbage", index=3)


def test_random_crops_are_seeded(model, images):
    first = keras_adtrs.score(model, images[:3], crops=3, crop_mode="random", seed=5)
    again = keras_adtrs.score(model, images[:3], crops=3, crop_mode="random", seed=5)
    other = keras_adtrs.score(model, images[:3], crops=3, crop_mode="random", seed=6)
    np.testing.assert_allclose(first, again, rtol=0, atol=1e-5)
    assert not np.allclose(first, other, rtol=0, atol=1e-7)
    a = image_crops.random_image_crops(images[0], 64, 2, seed=1, key=7)
    np.testing.assert_array_equal(a, image_crops.random_image_crops(images[0], 64, 2, seed=1, key=7))
    assert not np.array_equal(a, image_crops.random_image_crops(images[0], 64, 2, seed=1, key=8))


def test_score_files_rows_and_format(model, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_png(np.full((64, 64, 3), 90, np.uint8)))
    rows = scoring.score_files(model, [good, tmp_path / "nope.jpg"], crops=2)
    assert rows[0]["path"] == str(good) and isinstance(rows[0]["score"], float)
    assert rows[1]["path"].endswith("nope.jpg") and "cannot read" in rows[1]["error"]
    table = reporting.format_rows(rows, "table")
    assert "ERROR" in table and str(good) in table


def test_expand_paths(tmp_path):
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    for name in ("a.JPG", "b.png", "notes.txt", "sub/c.bmp", "sub/deep/d.gif"):
        (tmp_path / name).write_bytes(b"x")
    found = image_io.expand_paths([str(tmp_path)])
    assert [os.path.relpath(p, tmp_path) for p in found] == ["a.JPG", "b.png", "sub/c.bmp", "sub/deep/d.gif"]
    assert image_io.expand_paths([str(tmp_path / "*.png")]) == [str(tmp_path / "b.png")]
    assert len(image_io.expand_paths([str(tmp_path / "**" / "*.gif")])) == 1
    explicit = str(tmp_path / "notes.txt")
    assert image_io.expand_paths([explicit, explicit]) == [explicit]
    assert image_io.expand_paths(["/no/such/file.jpg"]) == ["/no/such/file.jpg"]
