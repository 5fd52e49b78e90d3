"""Strategies, the multi-worker loop and resuming a killed run (issue 6).

Select with `pytest -k "mirrored or strategy or worker or distribut"`. The
training runs are subprocesses: logical CPU devices and TF_CONFIG must be set
before TensorFlow starts, and a run must be killable.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

HELPER = str(REPO / "tests" / "distribute_helpers.py")
TINY = ["--dataset", "tiny", "--crop-size", "64", "--crops-per-image", "1", "--batch-size", "8",
        "--backbone-weights", "none", "--test-crops", "1", "--validation-fraction", "0.25", "--no-export",
        "--keep-checkpoint"]  # the tests read the final checkpoint (a clean run removes it otherwise)


def _env(**extra):
    env = {**os.environ, "KERAS_ADTRS_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO), **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _history_epochs(out):
    with open(out / "history.csv") as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle)]


def _state(out):
    path = out / "checkpoint" / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_choose_strategy_names(monkeypatch):
    import tensorflow as tf

    from keras_adtrs.training.distribute import choose_strategy, worker_role

    default = tf.distribute.get_strategy()
    assert choose_strategy("none") is default
    if len(tf.config.list_logical_devices("GPU")) < 2:
        assert choose_strategy("auto") is default
    assert worker_role(default) == (None, 0, True)
    with pytest.raises(ValueError):
        choose_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="TF_CONFIG"):
        choose_strategy("multiworker")


def test_mirrored_strategy_matches_single_device():
    """2 logical CPUs: the first step's losses and update equal one device's on the same global batch."""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "mirrored_parity.py")], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    assert out["replicas"] == 2
    # Terms that do not depend on how the batch is split (BatchNorm frozen, no dropout,
    # ranking weights 0 so that the total is one of them too). The Mean trackers are
    # summed across replicas when read, so these are global-batch means.
    for name in ("loss", "quality", "quality_flipped", "consistency", "consistency_flipped"):
        assert out["mirrored"][name] == pytest.approx(out["single"][name], abs=1e-4, rel=1e-5), name
    for name in out["mirrored"]:
        assert np.isfinite(out["mirrored"][name]), name
    # Loss divided by the replicas, gradients summed: the same SGD update.
    assert out["max_weight_change"] > 1e-3
    assert out["max_weight_diff"] < 1e-4 * max(1.0, out["max_weight_change"])


def _kill_when(processes, ready, deadline=600):
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


def _kill_after_first_checkpoint(args, out, env):
    process = subprocess.Popen([sys.executable, HELPER, *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when([process], lambda: (_state(out) or {}).get("epoch", 0) >= 1)
    return _state(out)


def test_killed_run_resumes_strategy_none(tmp_path):
    """SIGKILL after the first checkpoint; the same command again finishes exactly the asked epochs."""
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "3", "--strategy", "none", "--output-dir", str(out)]
    state = _kill_after_first_checkpoint(args, out, _env())
    assert state["epoch"] in (1, 2) and state["step"] == 0
    assert not (out / "metrics.json").exists()
    result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"resuming from epoch {state['epoch'] + 1}" in result.stdout
    assert f"Epoch {state['epoch']}/3" not in result.stdout  # no finished epoch repeated
    assert _history_epochs(out) == [0, 1, 2]
    final = _state(out)
    assert final["epoch"] == 3 and [r["epoch"] for r in final["history"]] == [0, 1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["best_epoch"] in (1, 2, 3)
    scored = [r["val_srcc"] for r in final["history"]]
    assert final["best_val_srcc"] == pytest.approx(max(scored))
    assert (out / "model.keras").is_file()
    assert len(list((out / "checkpoint").glob("*.weights.h5"))) == 1


def test_workers_agree_on_the_newest_common_checkpoint(tmp_path):
    from keras_adtrs.training.resume import agree_on_state, global_step

    settings = {"seed": 0}
    older = {"epoch": 1, "step": 0, "global_step": 3, "weights": "weights-000000003.weights.h5", "history": [{"epoch": 0}]}
    newer = {"epoch": 2, "step": 0, "global_step": 6, "weights": "weights-000000006.weights.h5",
             "history": [{"epoch": 0}, {"epoch": 1}], "previous": older, "settings": settings}
    assert global_step(None) == 0 and global_step(newer) == 6
    assert agree_on_state(newer, 6, str(tmp_path)) is newer
    assert agree_on_state(newer, 3, str(tmp_path)) == {**older, "settings": settings}
    assert agree_on_state(newer, 0, str(tmp_path)) is None  # another worker had no checkpoint yet
    assert agree_on_state(None, 0, str(tmp_path)) is None
    with pytest.raises(SystemExit, match="keeps no checkpoint of step 1"):
        agree_on_state(newer, 1, str(tmp_path))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(args, count=2):
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(count)]
    processes = []
    for index in range(count):
        tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
        env = _env(TF_CONFIG=tf_config, OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen([sys.executable, HELPER, *args], cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return processes


def _weights(path):
    import h5py

    arrays = []
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: arrays.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return dict(arrays)


def _finish(processes, timeout=900):
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        finally:
            if process.poll() is None:
                process.kill()
    return outputs


@pytest.mark.slow
def test_multiworker_two_local_workers_identical_weights(tmp_path):
    """MultiWorkerMirroredStrategy, 2 processes on 127.0.0.1: an epoch, identical weights."""
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "1", "--strategy", "multiworker", "--output-dir", str(out)]
    processes = _start_workers(args)
    outputs = _finish(processes)
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-4000:]
    assert _history_epochs(out) == [0]
    assert (out / "metrics.json").is_file() and (out / "model.keras").is_file()
    chief, other = _state(out), _state(out / "worker-1")
    assert chief["epoch"] == other["epoch"] == 1
    assert chief["history"][0]["loss"] == pytest.approx(other["history"][0]["loss"], rel=1e-6)
    a = _weights(out / "checkpoint" / chief["weights"])
    b = _weights(out / "worker-1" / "checkpoint" / other["weights"])
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
        if "layers" in name:  # model weights (the optimizer's too are compared below)
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name], np.float64), np.asarray(b[name], np.float64), err_msg=name)


def test_multiworker_killed_job_resumes(tmp_path):
    """2 workers; both SIGKILLed after their second checkpoint; the same command resumes both.

    What a preemption does to a multi-worker job: every worker is restarted
    with the same command, and each resumes from its own checkpoint (the
    chief's in the run folder, worker k's in worker-k/). A kill can land
    after one worker saved an epoch and before the other did: the test makes
    that happen by rolling worker 1 back to its previous checkpoint, and the
    workers must agree on the older step. The run ends with exactly the asked
    epochs, each once in history.csv, and identical weights on both workers.
    """
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "4", "--strategy", "multiworker", "--output-dir", str(out)]
    _kill_when(_start_workers(args),
               lambda: min((_state(o) or {}).get("epoch", 0) for o in (out, out / "worker-1")) >= 2)
    assert not (out / "metrics.json").exists()
    chief = _state(out)
    assert chief["epoch"] in (2, 3) and chief["previous"]["epoch"] == chief["epoch"] - 1
    assert len(list((out / "checkpoint").glob("*.weights.h5"))) == 2  # the newest and the one before
    # Worker 1 "was killed before it saved its newest epoch".
    lagging = _state(out / "worker-1")
    previous = lagging["previous"]
    (out / "worker-1" / "checkpoint" / lagging["weights"]).unlink()
    (out / "worker-1" / "checkpoint" / "state.json").write_text(json.dumps({**previous, "settings": lagging["settings"]}))
    agreed_epoch = min(chief["epoch"], previous["epoch"])

    processes = _start_workers(args)
    outputs = _finish(processes)
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-4000:]
    assert f"resuming from epoch {agreed_epoch + 1}, step 0" in outputs[0], outputs[0][-3000:]
    assert f"resuming from epoch {agreed_epoch + 1}, step 0" in outputs[1], outputs[1][-3000:]
    assert _history_epochs(out) == [0, 1, 2, 3]
    chief, other = _state(out), _state(out / "worker-1")
    assert chief["epoch"] == other["epoch"] == 4
    assert [r["epoch"] for r in chief["history"]] == [0, 1, 2, 3]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    a = _weights(out / "checkpoint" / chief["weights"])
    b = _weights(out / "worker-1" / "checkpoint" / other["weights"])
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
        if "layers" in name:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_mirrored_strategy_cli_run_mixed_precision(tmp_path):
    """`--strategy mirrored` on 2 logical CPUs, mixed precision, step checkpoints: a full run."""
    out = tmp_path / "run"
    args = ["--logical-cpus", "2", *TINY, "--epochs", "2", "--strategy", "mirrored", "--mixed-precision",
            "--checkpoint-every-steps", "1", "--output-dir", str(out)]
    # float16 is for GPUs: the run refuses it on a CPU unless forced (emulated).
    env = {**_env(), "KERAS_ADTRS_FORCE_PRECISION": "1"}
    result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    assert _history_epochs(out) == [0, 1]
    config = json.loads((out / "config.json").read_text())
    assert config["replicas"] == 2 and config["settings"]["precision"] == "mixed_float16"
    assert (out / "metrics.json").is_file()


@pytest.mark.slow
def test_jit_compile_single_device_and_mirrored(tmp_path):
    """`--jit-compile`: the whole step with one device; forward/backward only on 2 mirrored replicas."""
    # --logical-cpus is the helper's own option and must come first.
    for name, prefix, strategy in (("single", [], "none"), ("mirrored", ["--logical-cpus", "2"], "mirrored")):
        out = tmp_path / name
        args = [*prefix, *TINY, "--epochs", "1", "--strategy", strategy, "--jit-compile", "--output-dir", str(out)]
        result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        config = json.loads((out / "config.json").read_text())
        assert config["settings"]["jit_compile"] is True
        assert _history_epochs(out) == [0]
        metrics = json.loads((out / "metrics.json").read_text())
        assert np.isfinite(_state(out)["history"][0]["loss"]), metrics


@pytest.mark.slow
def test_multiworker_jit_compile(tmp_path):
    """`--jit-compile` under MultiWorkerMirroredStrategy on CPUs: XLA for the passes, the all-reduce outside."""
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "1", "--strategy", "multiworker", "--jit-compile", "--output-dir", str(out)]
    processes = _start_workers(args)
    outputs = _finish(processes)
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-4000:]
    chief, other = _state(out), _state(out / "worker-1")
    assert chief["history"][0]["loss"] == pytest.approx(other["history"][0]["loss"], rel=1e-6)
    assert np.isfinite(chief["history"][0]["loss"])
