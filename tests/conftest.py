"""Shared test helpers: tiny configs, no network, paths to ../shared."""

import os
import pathlib
import socket

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_ADTRS_DOWNLOAD_TIMEOUT", "5")

REPO = pathlib.Path(__file__).resolve().parents[1]
#: Fixtures kept in the repository (see tests/testdata/README.md).
TESTDATA = REPO / "tests" / "testdata"


def shared_dir():
    """The project's ../shared folder (or $KERAS_ADTRS_SHARED)."""
    env = os.environ.get("KERAS_ADTRS_SHARED")
    return pathlib.Path(env) if env else REPO.parent / "shared"


_real_connect = socket.socket.connect


def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0") and self.family in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        raise OSError(f"tests must not touch the network (tried to connect to {host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test: Python sockets may only connect to loopback."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(scope="session")
def default_data_dir(tmp_path_factory):
    """The default set, built once per test session into a temporary cache."""
    from keras_adtrs.data.synthetic import load_default_source

    directory = tmp_path_factory.mktemp("default_data")
    load_default_source(data_dir=str(directory), verbose=False)
    return str(directory)


def random_score_head(model, seed=0, stddev=0.01):
    """Gives a fresh model's zero-initialised score layer random weights, so
    that an untrained model's scores differ between images (tests compare them)."""
    kernel = model.network.get_layer("score_dense").kernel
    kernel.assign(np.random.default_rng(seed).normal(0.0, stddev, kernel.shape).astype("float32"))
    return model


@pytest.fixture(scope="session")
def tiny_model():
    """One random-weight crop-64 ADTRS model for read-only use."""
    import keras_adtrs

    model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_scale=10.0, score_offset=50.0)
    return random_score_head(model)


def random_crops(n, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


#: The test files that take longest, first. pytest-xdist (`-n 2 --dist loadfile`, pytest.ini) hands whole
#: files to its workers in collection order, so with these first the two workers end together instead of one
#: running a long file alone at the end. Within a file the order stays as written.
LONGEST_FIRST = ("test_jax_backend.py", "test_train_cli.py", "test_folds.py", "test_distribute.py",
                 "test_fine_tuning.py", "test_deployment.py", "test_scoring_beam.py", "test_model.py",
                 "test_pretraining.py", "test_precision.py", "test_docs.py", "test_batchnorm_folding.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
