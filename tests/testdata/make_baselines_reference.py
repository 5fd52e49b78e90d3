"""Makes the fixtures of tests/test_baselines.py: four small public-domain / CC0
photos and baselines_reference.json, numbers computed by INDEPENDENT tools.

Not run by the tests (it needs PyTorch and two packages the project does not
use). Run it in a scratch virtual environment, from the repository root:

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install scikit-image==0.26.0 torch==2.13.0   # brings numpy 2.4.6, scipy 1.17.1, Pillow 13.0.0
    /tmp/refvenv/bin/pip install --no-deps piq==0.8.0                   # its torchvision is not needed here
    /tmp/refvenv/bin/pip download --no-deps basicsr==1.4.2 -d /tmp/basicsr
    tar xzf /tmp/basicsr/basicsr-1.4.2.tar.gz -C /tmp/basicsr           # used from the sdist, not installed
    /tmp/refvenv/bin/python tests/testdata/make_baselines_reference.py --basicsr /tmp/basicsr/basicsr-1.4.2

It rewrites the four photos (add --skip-images to keep them) and
baselines_reference.json; run twice, it writes the same bytes.

The tools (their own code, imported from the installed wheel / the sdist):

- BRISQUE features and MATLAB `imresize`: piq 0.8.0 (`piq.brisque.
  _natural_scene_statistics`, `piq.functional.imresize`), which follows
  `brisque_feature.m` (zero-padded MSCN, GGD/AGGD grids 0.2:0.001:10, the
  four products, MATLAB's antialiased bicubic resize), in float64. One line of
  piq is replaced: `piq.functional.resize.cast_input` always casts to float32
  (its test `dtype != float32 or dtype != float64` is always true), so it is
  replaced by an identity and the resize runs in float64 like MATLAB.
  `piq.__init__` is skipped (it imports torchvision for other metrics).
- NIQE patch features, the NIQE score and MATLAB's pristine parameters:
  BasicSR 1.4.2 (`basicsr/metrics/niqe.py`, numpy; its `imresize` in
  `basicsr/utils/matlab_functions.py`, torch float32), whose docstring
  reports MATLAB R2021a agreement (5.72957338 vs 5.7295763 on baboon.png),
  and its `niqe_pris_params.npz` (mu_prisparam / cov_prisparam of the NIQE
  release's modelparameters.mat, and the fspecial window). The per-patch
  features come from the loop of `basicsr.metrics.niqe.niqe`, repeated here
  with basicsr's own `convolve`/`compute_feature`/`imresize` calls, keeping
  the features instead of reducing them to the score; the score itself is
  basicsr's `niqe()`.
- The grey image given to both: MATLAB's `rgb2gray` on uint8, written here
  from MATLAB's documented coefficients (neither tool has it: piq rounds
  0.299 R + 0.587 G + 0.114 B, basicsr uses YCbCr Y).
"""

import argparse
import hashlib
import importlib.util
import json
import pathlib
import platform
import sys
import types

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
MATLAB_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
PHOTO = "baselines_coffee.png"
PRISTINE = ("baselines_pristine_astronaut.jpg", "baselines_pristine_chelsea.jpg", "baselines_pristine_camera.jpg")


def make_images():
    """The four photos, from scikit-image 0.26.0's bundled data (LANCZOS resize, Pillow)."""
    import skimage.data

    def resized(array, width, height):
        return Image.fromarray(array).resize((width, height), Image.LANCZOS)

    resized(skimage.data.coffee(), 288, 192).save(HERE / PHOTO, optimize=True)  # 600x400 -> 288x192
    resized(skimage.data.astronaut(), 320, 320).save(HERE / PRISTINE[0], quality=95)  # 512x512 -> 320x320
    Image.fromarray(skimage.data.chelsea()).save(HERE / PRISTINE[1], quality=95)  # 451x300 as it is
    resized(skimage.data.camera(), 256, 256).save(HERE / PRISTINE[2], quality=95)  # grey 512x512 -> 256x256


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_piq():
    """piq's brisque and functional modules without piq/__init__ (torchvision)."""
    spec = importlib.util.find_spec("piq")
    package = types.ModuleType("piq")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["piq"] = package
    import piq.brisque
    import piq.functional.resize

    piq.functional.resize.cast_input = lambda x: (x, None)  # float64 stays float64 (see module docstring)
    return piq


def import_basicsr(root):
    """basicsr/metrics/niqe.py and utils/matlab_functions.py, without basicsr/__init__."""
    root = pathlib.Path(root) / "basicsr"
    for name in ("basicsr", "basicsr.metrics", "basicsr.utils"):
        package = types.ModuleType(name)
        package.__path__ = [str(root / name.partition(".")[2])] if "." in name else [str(root)]
        sys.modules[name] = package
    registry = types.ModuleType("basicsr.utils.registry")
    registry.METRIC_REGISTRY = types.SimpleNamespace(register=lambda: (lambda f: f))
    sys.modules["basicsr.utils.registry"] = registry
    metric_util = types.ModuleType("basicsr.metrics.metric_util")
    metric_util.reorder_image = metric_util.to_y_channel = None  # not used: inputs are grey 'HW'
    sys.modules["basicsr.metrics.metric_util"] = metric_util
    if importlib.util.find_spec("cv2") is None:  # niqe.py imports cv2 only for calculate_niqe's 'gray' path
        sys.modules["cv2"] = types.ModuleType("cv2")
    matlab = load_module("basicsr.utils.matlab_functions", root / "utils" / "matlab_functions.py")
    niqe = load_module("basicsr.metrics.niqe", root / "metrics" / "niqe.py")
    params = np.load(root / "metrics" / "niqe_pris_params.npz")
    return niqe, matlab, params


def basicsr_patch_features(niqe, imresize, img, window, block=96):
    """The loop of basicsr.metrics.niqe.niqe (1.4.2), returning the (n, 36) features.

    Patches in basicsr's (MATLAB's) column-major order: all rows of grid
    column 0, then column 1, ...
    """
    import math

    h, w = img.shape
    num_block_h, num_block_w = math.floor(h / block), math.floor(w / block)
    img = img[0 : num_block_h * block, 0 : num_block_w * block]
    distparam = []
    for scale in (1, 2):
        mu = niqe.convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(niqe.convolve(np.square(img), window, mode="nearest") - np.square(mu)))
        img_normalized = (img - mu) / (sigma + 1)
        feat = []
        for idx_w in range(num_block_w):
            for idx_h in range(num_block_h):
                b = img_normalized[
                    idx_h * block // scale : (idx_h + 1) * block // scale,
                    idx_w * block // scale : (idx_w + 1) * block // scale,
                ]
                feat.append(niqe.compute_feature(b))
        distparam.append(np.array(feat))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
    return np.concatenate(distparam, axis=1)


def blurred(rgb):
    """The blurred copy scored too (the test makes it the same way)."""
    from scipy import ndimage

    out = ndimage.gaussian_filter(rgb.astype(np.float64), (1.6, 1.6, 0), mode="reflect")
    return np.clip(out, 0, 255).round().astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--basicsr", required=True, help="the extracted basicsr-1.4.2 sdist")
    parser.add_argument("--skip-images", action="store_true", help="keep the photos already in tests/testdata")
    args = parser.parse_args()
    if not args.skip_images:
        make_images()

    import scipy
    import torch

    piq = import_piq()
    niqe, matlab, params = import_basicsr(args.basicsr)

    rgb = np.asarray(Image.open(HERE / PHOTO).convert("RGB"))
    copies = {"pristine": rgb, "blur_sigma_1.6": blurred(rgb)}
    out = {
        "description": (
            "Independent reference numbers for tests/test_baselines.py, made by "
            "tests/testdata/make_baselines_reference.py (see its docstring and tests/testdata/README.md)."
        ),
        "image": PHOTO,
        "image_sha256": hashlib.sha256((HERE / PHOTO).read_bytes()).hexdigest(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pillow": Image.__version__,
            "torch": torch.__version__,
            "piq": "0.8.0",
            "basicsr": "1.4.2",
        },
        "gray": "MATLAB rgb2gray on uint8: floor(rgb @ [0.298936021293775, 0.587043074451121, 0.114020904255103] + 0.5)",
        "copies": {
            "pristine": "the photo",
            "blur_sigma_1.6": "scipy.ndimage.gaussian_filter(rgb float64, (1.6, 1.6, 0), mode='reflect'), clipped, rounded",
        },
    }
    brisque, resize, patches, scores = {}, {}, {}, {}
    for name, image in copies.items():
        gray = np.floor(image.astype(np.float64) @ MATLAB_RGB2GRAY + 0.5)
        x = torch.from_numpy(gray)[None, None]
        feats = []
        for _ in range(2):
            feats.append(piq.brisque._natural_scene_statistics(x, 7, 7 / 6)[0].numpy())
            x = piq.functional.imresize(x, sizes=(x.size(2) // 2, x.size(3) // 2))
        brisque[name] = np.concatenate(feats).tolist()
        half = piq.functional.imresize(torch.from_numpy(gray)[None, None], sizes=(gray.shape[0] // 2, gray.shape[1] // 2))
        half = half[0, 0].numpy()
        resize[name] = {
            "shape": list(half.shape),
            "top_left_6x6": half[:6, :6].tolist(),
            "bottom_right_6x6": half[-6:, -6:].tolist(),
            "mean": float(half.mean()),
        }
        patches[name] = basicsr_patch_features(niqe, matlab.imresize, gray, params["gaussian_window"]).tolist()
        scores[name] = niqe.niqe(gray, params["mu_pris_param"], params["cov_pris_param"], params["gaussian_window"])
    h, w = rgb.shape[0] // 96, rgb.shape[1] // 96
    out["brisque_features"] = {
        "tool": "piq 0.8.0: _natural_scene_statistics at two scales, imresize(sizes=(H // 2, W // 2)) in between, float64",
        "values": brisque,
    }
    out["imresize_half"] = {"tool": "piq 0.8.0 functional.imresize (MATLAB bicubic, antialiased), float64", "values": resize}
    out["niqe_patch_features"] = {
        "tool": "basicsr 1.4.2 metrics/niqe.py loop (compute_feature, convolve mode 'nearest', imresize float32)",
        "patch_size": 96,
        "grid": [h, w],
        "order": "column-major (MATLAB blkproc): patch k is grid row k % rows, column k // rows",
        "values": patches,
    }
    out["niqe_score_matlab_model"] = {"tool": "basicsr 1.4.2 metrics.niqe.niqe with niqe_pris_params.npz", "values": scores}
    out["matlab_pristine_model"] = {
        "source": (
            "mu_pris_param / cov_pris_param / gaussian_window of basicsr 1.4.2 basicsr/metrics/niqe_pris_params.npz "
            "(Apache-2.0), BasicSR's copy of modelparameters.mat of the NIQE release (LIVE, UT Austin; "
            "A. Mittal, R. Soundararajan and A. C. Bovik, 'NIQE Software Release', 2012)"
        ),
        "licence": (
            "Copyright (c) 2011 The University of Texas at Austin; the NIQE release's notice permits use, copying, "
            "modification and distribution for any purpose with the notice and the citation: see tests/testdata/README.md"
        ),
        "mean": params["mu_pris_param"].reshape(-1).tolist(),
        "cov": params["cov_pris_param"].tolist(),
        "gaussian_window": params["gaussian_window"].tolist(),
    }
    (HERE / "baselines_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    print({k: round(v, 6) for k, v in scores.items()})


if __name__ == "__main__":
    main()
