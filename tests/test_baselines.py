"""keras_adtrs.baselines: BRISQUE and NIQE against independent tools, and as quality yardsticks.

Fixtures (tests/testdata/README.md says how each was made): a CC0 photo
(`baselines_coffee.png`), three public-domain / CC0 pristine photos for
fitting NIQE, and `baselines_reference.json`, numbers computed by piq 0.8.0
and BasicSR 1.4.2 (not by this package).
"""

import doctest
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import scipy.stats
from PIL import Image
from scipy import ndimage

from conftest import REPO, TESTDATA
from keras_adtrs.baselines import (
    BRISQUERegressor,
    ImageTooSmallError,
    NIQEModel,
    NotFittedError,
    TooFewPatchesError,
    brisque,
    brisque_features,
    gray_patch_features,
    imresize_bicubic,
    niqe,
    niqe_patch_features,
    nss,
    rgb2gray,
)
from keras_adtrs.data.distortions import distort
from keras_adtrs.data.images import ImageReadError, load_image

PHOTO = TESTDATA / "baselines_coffee.png"
PRISTINE = [TESTDATA / f"baselines_pristine_{name}.jpg" for name in ("astronaut", "chelsea", "camera")]
SHAPES_18 = np.array([0, 2, 6, 10, 14])  # shape parameters (on the 0.001 grid) among a scale's 18 features
SHAPES_36 = np.concatenate([SHAPES_18, SHAPES_18 + 18])


@pytest.fixture(scope="module")
def reference():
    return json.loads((TESTDATA / "baselines_reference.json").read_text())


@pytest.fixture(scope="module")
def photo():
    return load_image(PHOTO)


def blurred(rgb):
    """The blurred copy of the reference file (same arithmetic as its generator)."""
    out = ndimage.gaussian_filter(rgb.astype(np.float64), (1.6, 1.6, 0), mode="reflect")
    return np.clip(out, 0, 255).round().astype(np.uint8)


def assert_features_close(ours, theirs, shapes, rtol, what):
    """Shape parameters within one grid step (0.001); the others within `rtol` (relative)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    shape_mask = np.zeros(ours.shape[-1], bool)
    shape_mask[shapes] = True
    np.testing.assert_allclose(ours[..., shape_mask], theirs[..., shape_mask], rtol=0, atol=0.001 + 1e-9, err_msg=what)
    np.testing.assert_allclose(ours[..., ~shape_mask], theirs[..., ~shape_mask], rtol=rtol, atol=1e-12, err_msg=what)


# -- agreement with independent tools ------------------------------------------


def test_fixture_is_the_one_the_reference_was_computed_on(reference):
    import hashlib

    assert hashlib.sha256(PHOTO.read_bytes()).hexdigest() == reference["image_sha256"]


def test_gaussian_window_and_half_scale_resize_match_matlab_references(reference, photo):
    """fspecial window: MATLAB's own (BasicSR's copy). imresize: piq's MATLAB port in float64."""
    np.testing.assert_allclose(
        nss.gaussian_window(), reference["matlab_pristine_model"]["gaussian_window"], rtol=0, atol=1e-15
    )
    for name, image in (("pristine", photo), ("blur_sigma_1.6", blurred(photo))):
        expected = reference["imresize_half"]["values"][name]
        half = imresize_bicubic(rgb2gray(image), 0.5)
        assert list(half.shape) == expected["shape"]
        # Both float64: only summation order differs (measured: identical).
        np.testing.assert_allclose(half[:6, :6], expected["top_left_6x6"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(half[-6:, -6:], expected["bottom_right_6x6"], rtol=0, atol=1e-9)
        assert half.mean() == pytest.approx(expected["mean"], abs=1e-9)


def test_brisque_features_match_piq(reference, photo):
    """piq 0.8.0 (float64), same grey input: on the photo every feature agrees to 1e-9
    relative (measured 2e-13). On the blurred copy, flat areas give MSCN coefficients
    that are rounding noise (exactly 0 in exact arithmetic); the sign of that noise
    decides on which side of the AGGD fits they count, and it differs between any two
    implementations (MATLAB's too): product means/variances then agree to 5e-3
    (measured 1.1e-3), shapes exactly."""
    values = reference["brisque_features"]["values"]
    assert_features_close(brisque_features(PHOTO), values["pristine"], SHAPES_36, 1e-9, "photo")
    assert_features_close(brisque_features(blurred(photo)), values["blur_sigma_1.6"], SHAPES_36, 5e-3, "blur")


def test_niqe_patch_features_match_basicsr(reference, photo):
    """BasicSR 1.4.2's NIQE loop: full scale in float64 (1e-9 relative; measured 1e-11);
    its half scale goes through a float32 resize, which moves a shape by one 0.001
    grid step in rare patches (once here) and the scales and means that depend on it
    by < 1e-3 relative (measured 5e-4)."""
    expected = reference["niqe_patch_features"]
    rows, cols = expected["grid"]
    theirs = np.array(expected["values"]["pristine"]).reshape(cols, rows, 36).transpose(1, 0, 2).reshape(-1, 36)
    ours = niqe_patch_features(photo, patch_size=expected["patch_size"])
    assert_features_close(ours[:, :18], theirs[:, :18], SHAPES_18, 1e-9, "full scale")
    assert_features_close(ours[:, 18:], theirs[:, 18:], SHAPES_18, 1e-3, "half scale")


def test_niqe_score_with_matlab_parameters_matches_basicsr(reference, photo, tmp_path):
    """MATLAB's pristine model: our NIQE equals BasicSR's within 1e-3 relative
    (measured 1.1e-5 on the photo, 9.4e-5 on the blurred copy: float32 resize, flat areas)."""
    params = reference["matlab_pristine_model"]
    model = NIQEModel(params["mean"], params["cov"])
    scores = reference["niqe_score_matlab_model"]["values"]
    assert model.score(photo) == pytest.approx(scores["pristine"], rel=1e-3)
    assert model.score(blurred(photo)) == pytest.approx(scores["blur_sigma_1.6"], rel=1e-3)
    # The same parameters read from a MATLAB file.
    path = tmp_path / "modelparameters.mat"
    scipy.io.savemat(path, {"mu_prisparam": np.array(params["mean"])[None], "cov_prisparam": np.array(params["cov"])})
    assert NIQEModel.from_matlab(path).score(photo) == model.score(photo)


def test_rgb2gray_is_matlabs():
    """MATLAB rgb2gray rounds 0.298936 R + 0.587043 G + 0.114021 B (104.496 here), not 0.299/0.587/0.114 (104.506)."""
    assert rgb2gray(np.array([[[238, 10, 241]]], np.uint8))[0, 0] == 104.0
    assert rgb2gray(np.array([[[255, 255, 255]]], np.uint8))[0, 0] == 255.0
    assert rgb2gray(np.array([[[238.0, 10.0, 241.0]]]))[0, 0] == pytest.approx(104.49624173790949)


# -- yardsticks: pristine better than distorted ---------------------------------


def _pristine_variants(patch_size):
    """Flips and half-patch-shifted crops of the three pristine photos: more patches to fit."""
    for path in PRISTINE:
        image = load_image(path)
        for flipped in (image, image[:, ::-1]):
            for dy in (0, patch_size // 2):
                for dx in (0, patch_size // 2):
                    yield flipped[dy:, dx:]


@pytest.fixture(scope="module")
def distorted(photo):
    """Level 3 of keras_adtrs.data.distortions: blur sigma 1.6, noise sigma 14, JPEG quality 18."""
    return {kind: distort(photo, kind, 3, np.random.default_rng(7)) for kind in ("blur", "noise", "jpeg")}


def test_niqe_fitted_on_other_pristine_photos_scores_the_photo_best(photo, distorted, tmp_path):
    model = NIQEModel.fit(_pristine_variants(96), patch_size=96)
    assert model.num_images == 24 and model.num_patches >= 37
    pristine = model.score(PHOTO)
    for kind, image in distorted.items():
        assert model.score(image) > pristine + 2.0, kind
    # Saved and loaded, either format, the model scores the same.
    for name in ("model.npz", "model.json"):
        model.save(tmp_path / name)
        loaded = NIQEModel.load(tmp_path / name)
        assert loaded.score(PHOTO) == pristine
        assert loaded.get_config() == model.get_config()


def test_niqe_with_matlab_parameters_scores_the_photo_best(reference, photo, distorted):
    params = reference["matlab_pristine_model"]
    model = NIQEModel(params["mean"], params["cov"])
    pristine = model.score(photo)
    for kind, image in distorted.items():
        assert model.score(image) > pristine + 1.0, kind


def test_niqe_fit_keeps_only_the_sharp_patches():
    """MATLAB's rule: a patch is kept when its mean local deviation > 0.75 x the image's sharpest."""
    rng = np.random.default_rng(0)
    image = np.empty((192, 192), np.uint8)
    image[:, :96] = rng.integers(0, 256, (192, 96))  # two sharp patches
    image[:, 96:] = np.clip(np.linspace(60, 120, 96)[None, :] + rng.normal(0, 2, (192, 96)), 0, 255)  # two smooth ones
    features, sharpness = gray_patch_features(rgb2gray(np.repeat(image[:, :, None], 3, -1)), 96)
    assert features.shape == (4, 36) and sharpness[0] > 4 * sharpness[1]
    kept = niqe_patch_features(image, 96, sharpness_threshold=0.75)
    np.testing.assert_array_equal(kept, features[[0, 2]])  # row-major grid: patches 0 and 2 are the left column
    assert niqe_patch_features(image, 96).shape == (4, 36)  # scoring keeps every patch


def test_brisque_regressor_ranks_held_out_distortion_levels(photo):
    """Fitted on distorted copies of the three pristine photos (label = level 0..5),
    it ranks the copies of the held-out photo (measured Spearman 0.97)."""

    def copies(image, seed):
        out = [(image, 0)]
        for kind in ("blur", "noise", "jpeg"):
            for level in range(1, 6):
                out.append((distort(image, kind, level, np.random.default_rng(seed + level)), level))
        return out

    train = [c for i, path in enumerate(PRISTINE) for c in copies(load_image(path), 10 * i)]
    test = copies(photo, 100)
    x_train = np.stack([brisque_features(image, i) for i, (image, _) in enumerate(train)])
    x_test = np.stack([brisque_features(image, i) for i, (image, _) in enumerate(test)])
    y_train = np.array([level for _, level in train], float)
    y_test = np.array([level for _, level in test], float)
    model = BRISQUERegressor(seed=0).fit(x_train, y_train)
    predicted = model.predict(x_test)
    assert scipy.stats.spearmanr(predicted, y_test)[0] > 0.8
    assert model.gamma_ in model.gammas and model.lambda_ in model.lambdas
    # JSON round trip: identical predictions.
    restored = BRISQUERegressor.from_json(model.to_json())
    np.testing.assert_array_equal(restored.predict(x_test), predicted)
    assert restored.get_config() == model.get_config()
    # The inner K-fold is seeded: the same seed gives the same model.
    again = BRISQUERegressor(seed=0).fit(x_train, y_train)
    np.testing.assert_array_equal(again.predict(x_test), predicted)


# -- inputs and errors -----------------------------------------------------------


def test_paths_bytes_arrays_grey_and_16_bit_give_the_same_features(photo):
    expected = brisque_features(photo)
    np.testing.assert_array_equal(brisque_features(PHOTO), expected)
    np.testing.assert_array_equal(brisque_features(PHOTO.read_bytes()), expected)
    grey = rgb2gray(photo).astype(np.uint8)
    np.testing.assert_array_equal(brisque_features(grey.astype(np.uint16) * 257), brisque_features(grey))
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(brisque_features(rgba), expected)


def test_too_small_images_raise_a_typed_error_naming_them(tmp_path):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 150, 3), np.uint8)).save(small)  # one 96-px patch
    for call in (lambda: NIQEModel(np.zeros(36), np.eye(36)).score(small), lambda: niqe_patch_features(small)):
        with pytest.raises(ImageTooSmallError, match=r"small\.png: 150x100 px holds 1 patch"):
            call()
    with pytest.raises(ImageTooSmallError, match=r"image #4 \(ndarray\): 20x20 px is too small for BRISQUE"):
        brisque_features(np.zeros((20, 20), np.uint8), index=4)
    with pytest.raises(ImageTooSmallError, match="small.png"):
        NIQEModel.fit([PRISTINE[0], small])
    assert issubclass(ImageTooSmallError, ValueError) and issubclass(TooFewPatchesError, ValueError)


def test_corrupt_files_raise_image_read_error_naming_them(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        brisque_features(broken)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        NIQEModel(np.zeros(36), np.eye(36)).score(broken)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        NIQEModel.fit([PRISTINE[0], broken])
    with pytest.raises(ImageReadError, match=r"image #2"):
        brisque_features(b"garbage", index=2)


def test_fitting_on_too_few_patches_raises_a_typed_error():
    with pytest.raises(TooFewPatchesError, match=r"1 image\(s\).*patch\(es\) kept, at least 37 needed"):
        NIQEModel.fit([PRISTINE[0]])
    flat = np.full((192, 192), 128, np.uint8)  # flat: NaN features
    with pytest.raises(TooFewPatchesError, match="without NaN features"):
        NIQEModel(np.zeros(36), np.eye(36)).score(flat)


def test_bad_arguments_raise_value_errors(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        BRISQUERegressor().predict(np.zeros((1, 36)))
    with pytest.raises(ValueError, match="folds must be an integer >= 2, got 1"):
        BRISQUERegressor(folds=1)
    model = BRISQUERegressor(folds=2).fit(np.random.default_rng(0).normal(size=(8, 3)), np.arange(8.0))
    with pytest.raises(ValueError, match="features have 4 columns, the regressor was fitted on 3"):
        model.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"non-finite value at row 1, column 0"):
        model.predict(np.array([[0.0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="labels has 3 values for 8 feature rows"):
        BRISQUERegressor(folds=2).fit(np.zeros((8, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="patch_size must be an even integer >= 16, got 95"):
        niqe_patch_features(np.zeros((300, 300), np.uint8), patch_size=95)
    with pytest.raises(ValueError, match=r"sharpness_threshold must lie in \[0, 1\]"):
        niqe_patch_features(np.zeros((300, 300), np.uint8), sharpness_threshold=1.5)
    with pytest.raises(ValueError, match="writes .npz or .json"):
        NIQEModel(np.zeros(36), np.eye(36)).save(tmp_path / "model.txt")
    with pytest.raises(ValueError, match="not a saved BRISQUERegressor"):
        BRISQUERegressor.from_json(json.dumps({"format": "other"}))


# -- the package ------------------------------------------------------------------


def test_docstring_examples_run():
    for module in (nss, brisque, niqe):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


def test_baselines_import_neither_keras_nor_tensorflow():
    code = (
        "import sys, keras_adtrs.baselines\n"
        "bad = sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_baselines_accept_an_in_memory_png_of_the_photo(photo):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    np.testing.assert_array_equal(niqe_patch_features(buffer.getvalue()), niqe_patch_features(photo))
