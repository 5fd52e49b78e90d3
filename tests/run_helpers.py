"""Shared helpers of the tests that run the commands as subprocesses (training, killing, resuming).

Plain functions and constants; the pytest fixtures live in `tests/conftest.py`.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

#: Runs the train command on a tiny in-memory data set (`--dataset tiny`): `python HELPER TRAIN ARGS...`.
HELPER = str(REPO / "tests" / "distribute_helpers.py")
#: A tiny run on the `tiny` set; the tests read the final checkpoint (a clean run removes it otherwise).
TINY_SET = ["--dataset", "tiny", "--crop-size", "64", "--crops-per-image", "1", "--batch-size", "8",
            "--backbone-weights", "none", "--test-crops", "1", "--validation-fraction", "0.25", "--no-export",
            "--keep-checkpoint"]
#: A tiny run of the default set (with `--data-dir` of the `default_data_dir` fixture).
TINY = ["--crop-size", "64", "--epochs", "2", "--steps-per-epoch", "2", "--crops-per-image", "1", "--batch-size", "8",
        "--test-crops", "1"]


def run_env(**extra):
    """The environment of a command subprocess: offline, quiet, this checkout first, no TF_CONFIG."""
    env = {**os.environ, "KERAS_ADTRS_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    env.pop("TF_CONFIG", None)
    env.pop("KERAS_ADTRS_VERBOSE", None)
    env.update(extra)
    return env


def run_train(args, **env):
    """`python -m keras_adtrs.train ARGS` in the repository, offline; the finished process."""
    return subprocess.run([sys.executable, "-m", "keras_adtrs.train", *args], cwd=REPO, env=run_env(**env),
                          capture_output=True, text=True, timeout=900)


def history_epochs(out):
    with open(out / "history.csv") as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle)]


def checkpoint_state(out):
    """A run folder's resume state (`checkpoint/state.json`), or None."""
    path = out / "checkpoint" / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kill_when(processes, ready, deadline=600):
    """SIGKILLs every process once `ready()` is true; fails if one ends first or time runs out."""
    started = time.time()
    try:
        while time.time() - started < deadline:
            if ready():
                break
            for process in processes:
                if process.poll() is not None:
                    pytest.fail("training ended before it could be killed:\n" + process.stdout.read()[-3000:])
            time.sleep(0.1)
        else:
            pytest.fail("no checkpoint in time")
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()


def kill_after_first_checkpoint(args, out, env):
    """Starts `HELPER ARGS`, SIGKILLs it once its first epoch's checkpoint is written; returns that state."""
    process = subprocess.Popen([sys.executable, HELPER, *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kill_when([process], lambda: (checkpoint_state(out) or {}).get("epoch", 0) >= 1)
    return checkpoint_state(out)


def write_live_challenge_release(root, images, scores):
    """A LIVE-C release folder (`ChallengeDB_release` layout, .mat files as released) holding `images`.

    Args:
        root: pathlib.Path. Where `ChallengeDB_release/` is made.
        images: list of uint8 arrays `(H, W, 3)`; saved as `<k>.bmp`.
        scores: their MOS.

    Returns:
        The release folder.
    """
    import numpy as np
    import scipy.io
    from PIL import Image

    release = root / "ChallengeDB_release"
    (release / "Images" / "trainingImages").mkdir(parents=True)
    (release / "Data").mkdir()
    names = [f"t{k}.bmp" for k in range(1, 8)] + [f"{100 + k}.bmp" for k in range(len(images))]
    for k, name in enumerate(names[:7]):
        Image.fromarray(np.full((48, 48, 3), 40 * k, np.uint8)).save(release / "Images" / "trainingImages" / name)
    for name, pixels in zip(names[7:], images):
        Image.fromarray(pixels).save(release / "Images" / name)
    cell = np.empty((len(names), 1), dtype=object)
    for k, name in enumerate(names):
        cell[k, 0] = np.array([name])
    mos = np.concatenate([np.full(7, 50.0), np.asarray(scores, np.float64)])[None, :]
    scipy.io.savemat(release / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(release / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    scipy.io.savemat(release / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.full_like(mos, 12.0)})
    return release
