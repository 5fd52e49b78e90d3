"""Tests of the IQA TFDS builders (dummy data), the IQASource loaders and the csv source."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_adtrs.data.tfds as kd
from conftest import shared_dir
from keras_adtrs.data.registry import load_source
from keras_adtrs.data.tfds import _common
from keras_adtrs.data.tfds.csiq import csiq_dataset_builder
from keras_adtrs.data.tfds.kadid10k import kadid10k_dataset_builder
from keras_adtrs.data.tfds.koniq10k import koniq10k_dataset_builder
from keras_adtrs.data.tfds.live_challenge import live_challenge_dataset_builder
from keras_adtrs.data.tfds.live_iqa import live_iqa_dataset_builder
from keras_adtrs.data.tfds.sources import ReleaseMismatchError, official_split
from keras_adtrs.errors import DataSetError
from keras_adtrs.data.tfds.tid2013 import tid2013_dataset_builder

HERE = os.path.dirname(os.path.abspath(kd.__file__))
#: The real LIVE-C subset in ../shared (tests that need it skip when ../shared is absent).
CLIVE_DEV = str(shared_dir() / "data" / "clive_dev" / "ChallengeDB_release")


def _dummy(name):
    return os.path.join(HERE, name, "dummy_data")


try:  # tfds.testing needs `dill` and `importlib_resources` (dev extras); without them only these cases skip.
    import dill  # noqa: F401
    import importlib_resources  # noqa: F401

    _BuilderTestCase = tfds.testing.DatasetBuilderTestCase
except ImportError:  # pragma: no cover
    _BuilderTestCase = None

if _BuilderTestCase is None:

    def test_builder_test_cases():
        pytest.skip("tfds.testing unavailable: pip install dill importlib_resources")

else:

    class LiveIqaTest(_BuilderTestCase):
        DATASET_CLASS = live_iqa_dataset_builder.Builder
        DUMMY_DATA = EXAMPLE_DIR = _dummy("live_iqa")
        SPLITS = {"train": 5}


    class CsiqTest(_BuilderTestCase):
        DATASET_CLASS = csiq_dataset_builder.Builder
        DUMMY_DATA = EXAMPLE_DIR = _dummy("csiq")
        SPLITS = {"train": 4}


    class Tid2013Test(_BuilderTestCase):
        DATASET_CLASS = tid2013_dataset_builder.Builder
        DUMMY_DATA = EXAMPLE_DIR = _dummy("tid2013")
        SPLITS = {"train": 4}


    class Kadid10kTest(_BuilderTestCase):
        DATASET_CLASS = kadid10k_dataset_builder.Builder
        DUMMY_DATA = EXAMPLE_DIR = _dummy("kadid10k")
        SPLITS = {"train": 4}


    class LiveChallengeTest(_BuilderTestCase):
        DATASET_CLASS = live_challenge_dataset_builder.Builder
        DUMMY_DATA = EXAMPLE_DIR = _dummy("live_challenge")
        SPLITS = {"train": 4}


    class Koniq10kTest(_BuilderTestCase):
        DATASET_CLASS = koniq10k_dataset_builder.Builder
        DUMMY_DATA = EXAMPLE_DIR = _dummy("koniq10k")
        SPLITS = {"train": 5}



del _BuilderTestCase  # not a test itself


# --- IQASource loaders on the dummy data ------------------------------------

EXPECTED = {
    # name: (count, higher_is_better, score_range, number of groups)
    "live_iqa": (5, False, (0.0, 100.0), 2),
    "csiq": (4, False, (0.0, 1.0), 2),
    "tid2013": (4, True, (0.0, 9.0), 2),
    "kadid10k": (4, True, (1.0, 5.0), 2),
    "live_challenge": (4, True, (0.0, 100.0), 4),
    "koniq10k": (5, True, (1.0, 5.0), 5),
}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_source_from_dummy_data(name, tfds_dir):
    count, higher, score_range, num_groups = EXPECTED[name]
    source = load_source(name, data_dir=tfds_dir, manual_dir=_dummy(name))
    assert len(source) == count
    assert source.higher_is_better is higher
    assert source.score_range == score_range
    assert len(np.unique(source.groups)) == num_groups
    assert source.names == sorted(source.names) and len(set(source.names)) == count
    assert source.scores.dtype == np.float32 and np.all(np.isfinite(source.scores))
    assert len(source.metadata["score_std"]) == count
    for data in source.images:
        assert isinstance(data, bytes)
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        assert image.dtype == tf.uint8 and tuple(image.shape) == (32, 40, 3)
    # Built once: a second load reads the cache without manual_dir.
    again = load_source(name, data_dir=tfds_dir)
    np.testing.assert_array_equal(again.scores, source.scores)


def test_synthetic_metadata(tfds_dir):
    live = load_source("live_iqa", data_dir=tfds_dir, manual_dir=_dummy("live_iqa"))
    assert live.names[0] == "fastfading/img5.bmp"
    assert set(live.metadata["distortion"]) == {"jp2k", "jpeg", "wn", "gblur", "fastfading"}
    i = live.names.index("jp2k/img1.bmp")
    assert live.scores[i] == pytest.approx(21.0) and live.metadata["level"][i] == pytest.approx(0.5)
    assert live.metadata["reference"][i] == "parrots.bmp"
    tid = load_source("tid2013", data_dir=tfds_dir, manual_dir=_dummy("tid2013"))
    i = tid.names.index("I02_08_5.BMP")  # mos_with_names says i02_08_5.bmp: matched case-insensitively
    assert tid.metadata["distortion"][i] == "08 gaussian blur" and tid.metadata["level"][i] == 5
    assert tid.metadata["score_std"][i] == pytest.approx(0.31)
    csiq = load_source("csiq", data_dir=tfds_dir, manual_dir=_dummy("csiq"))
    i = csiq.names.index("1600.AWGN.1.png")
    assert csiq.scores[i] == pytest.approx(0.061) and csiq.metadata["reference"][i] == "1600.png"
    assert csiq.metadata["distortion"][i] == "awgn"
    kadid = load_source("kadid10k", data_dir=tfds_dir, manual_dir=_dummy("kadid10k"))
    i = kadid.names.index("I01_25_05.png")
    assert kadid.metadata["score_std"][i] == pytest.approx(np.sqrt(0.5))
    assert kadid.metadata["distortion"][i] == "25 contrast change"


def test_koniq_official_split(tfds_dir):
    source = load_source("koniq10k", data_dir=tfds_dir, manual_dir=_dummy("koniq10k"))
    split = official_split(source)
    assert [len(split.train), len(split.validation), len(split.test)] == [3, 1, 1]
    assert source.names[split.test[0]] == "10011347966.jpg"


def test_live_challenge_plain_reader_matches_the_builder(tfds_dir):
    """One LIVE-C reader: without TFDS the same examples, in the same order, with the same scores."""
    built = load_source("live_challenge", data_dir=tfds_dir, manual_dir=_dummy("live_challenge"), tensorflow=True)
    plain = load_source("live_challenge", manual_dir=_dummy("live_challenge"), tensorflow=False)
    assert plain.names == built.names
    np.testing.assert_array_equal(plain.scores, built.scores)
    np.testing.assert_array_equal(plain.metadata["score_std"], built.metadata["score_std"])
    for path, data in zip(plain.images, built.images):
        assert _common.read_image_bytes(path) == data


def test_prepared_set_refuses_another_release(tmp_path):
    """A prepared set records its release; another manual_dir stops with an error naming both folders."""
    release = tmp_path / "release"
    shutil.copytree(_dummy("live_challenge"), release)
    data_dir = str(tmp_path / "tfds")
    first = load_source("live_challenge", data_dir=data_dir, manual_dir=str(release), tensorflow=True)
    assert len(first) == 4
    # The same release again, or no manual_dir: the prepared set.
    assert load_source("live_challenge", data_dir=data_dir, manual_dir=str(release), tensorflow=True).names == first.names
    assert load_source("live_challenge", data_dir=data_dir, tensorflow=True).names == first.names
    # Another release (a copy with one image fewer): refused, naming both folders and how to rebuild.
    other = tmp_path / "other"
    shutil.copytree(release, other)
    (other / "Images" / "534.JPG").unlink()
    with pytest.raises(ReleaseMismatchError) as error:
        load_source("live_challenge", data_dir=data_dir, manual_dir=str(other), tensorflow=True)
    message = str(error.value)
    assert str(release) in message and str(other) in message, message
    assert "another data_dir" in message and "delete" in message and "leave out manual_dir" in message, message
    # The same folder with other files: refused too.
    (release / "Images" / "534.JPG").unlink()
    with pytest.raises(ReleaseMismatchError, match="changed"):
        load_source("live_challenge", data_dir=data_dir, manual_dir=str(release), tensorflow=True)


def test_tfds_sets_need_tensorflow_datasets(tmp_path):
    with pytest.raises(ValueError, match="TensorFlow Datasets"):
        load_source("csiq", data_dir=str(tmp_path), manual_dir=_dummy("csiq"), tensorflow=False)
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        load_source("nope")


def test_image_policy():
    root = _dummy("koniq10k")
    rgb = os.path.join(root, "1024x768", "10004473376.jpg")
    with open(rgb, "rb") as f:
        assert _common.read_image_bytes(rgb) == f.read()  # original bytes kept
    cmyk = _common.read_image_bytes(os.path.join(root, "1024x768", "10012362813.jpg"))
    assert cmyk[:4] == b"\x89PNG"  # CMYK JPEG converted to RGB PNG
    gray16 = os.path.join(_dummy("kadid10k"), "kadid10k", "images", "I01_25_05.png")
    with open(gray16, "rb") as f:
        assert _common.read_image_bytes(gray16) == f.read()  # 16-bit PNG kept; TF scales it to 8 bits


def test_csiq_text_labels(tmp_path):
    (tmp_path / "csiq_label.txt").write_text("1600.AWGN.1.png 0.061\ncactus.BLUR.2.png 0.233\n")
    labels = csiq_dataset_builder.read_labels(tmp_path)
    assert labels[0][:4] == ("1600", "awgn", 1, 0.061) and np.isnan(labels[0][4])
    (tmp_path / "csiq_label.txt").write_text("1600.AWGN.1.png oops\n")
    with pytest.raises(ValueError, match="line 1"):
        csiq_dataset_builder.read_labels(tmp_path)


def test_missing_manual_dir_is_explained(tmp_path):
    with pytest.raises(ValueError, match="manual_dir"):
        load_source("tid2013", data_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(CLIVE_DEV), reason="real LIVE-C dev subset not available")
def test_live_challenge_real_dev_subset(tmp_path):
    source = load_source("live_challenge", data_dir=str(tmp_path), manual_dir=CLIVE_DEV)
    assert len(source) == 200
    assert not any(n.startswith("t") and n.endswith(".bmp") and n[1:-4].isdigit() for n in source.names)
    assert 0.0 <= source.scores.min() < source.scores.max() <= 100.0
    assert len(np.unique(source.groups)) == 200
    with open(os.path.join(CLIVE_DEV, "Images", source.names[0]), "rb") as f:
        assert source.images[0] == f.read()


# --- csv source ---------------------------------------------------------------


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)


def test_csv_source(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        _png(tmp_path / "imgs" / name)
    csv_path = tmp_path / "scores.csv"
    csv_path.write_text("image,score,reference,std\na.png,3.5,r1,0.5\nb.png,2,r1,\nsub/c.png,4.25,r2,0.1\n")
    source = load_source("csv", manual_dir=str(tmp_path / "imgs"), csv_path=str(csv_path))
    assert source.names == ["a.png", "b.png", "sub/c.png"]
    np.testing.assert_allclose(source.scores, [3.5, 2, 4.25])
    assert source.groups.tolist() == [0, 0, 1]
    assert os.path.isfile(source.images[2]) and source.score_range == (2.0, 4.25)
    assert np.isnan(source.metadata["score_std"][1])
    # Without reference: one group per image; image root defaults to the CSV's folder.
    (tmp_path / "imgs" / "plain.csv").write_text("image,score\na.png,1\nb.png,2\n")
    plain = load_source("csv", csv_path=str(tmp_path / "imgs" / "plain.csv"), higher_is_better=False)
    assert plain.groups.tolist() == [0, 1] and plain.higher_is_better is False


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("", ValueError, "empty"),
        ("image,score\n", ValueError, "no data rows"),
        ("image,mos\na.png,3\n", ValueError, r"missing column\(s\) \['score'\]"),
        ("image,score\na.png,3\nb.png,oops\n", ValueError, "line 3.*not a number.*'oops'"),
        ("image,score\na.png,nan\n", ValueError, "line 2.*score.*nan"),
        ("image,score\na.png,1\na.png,2\n", ValueError, "line 3.*listed again"),
        ("image,score\na.png,1\nx.png,2\ny.png,3\n", DataSetError, "2 of 3 image.*'x.png' \\(line 3\\), 'y.png'"),
    ],
)
def test_csv_source_errors(tmp_path, text, error, match):
    _png(tmp_path / "a.png")
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(error, match=match):
        load_source("csv", csv_path=str(tmp_path / "s.csv"))


def test_csv_source_missing_file(tmp_path):
    with pytest.raises(DataSetError, match="data set 'csv': CSV file not found: .*nope.csv"):
        load_source("csv", csv_path=str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="csv_path"):
        load_source("csv", manual_dir=str(tmp_path))
