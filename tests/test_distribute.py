"""Strategies, the multi-worker loop and resuming a killed run (issue 6).

Select with `pytest -k "mirrored or strategy or worker or distribut"`. The
training runs are subprocesses: logical CPU devices and TF_CONFIG must be set
before TensorFlow starts, and a run must be killable.
"""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from keras_adtrs.errors import ResumeError, SettingError
from run_helpers import (

    HELPER,
    TINY_SET,
    checkpoint_state,
    history_epochs,
    kill_after_first_checkpoint,
    kill_when,
    run_env,
)

pytestmark = pytest.mark.large  # strategies and workers in subprocesses


def test_choose_strategy_names(monkeypatch):
    import tensorflow as tf

    from keras_adtrs.training.distribute import choose_strategy, worker_role

    default = tf.distribute.get_strategy()
    assert choose_strategy("none") is default
    if len(tf.config.list_logical_devices("GPU")) < 2:
        assert choose_strategy("auto") is default
    assert worker_role(default) == (None, 0, True)
    with pytest.raises(SettingError, match="strategy must be one of"):
        choose_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SettingError, match="strategy multiworker needs TF_CONFIG"):
        choose_strategy("multiworker")


def test_mirrored_strategy_matches_single_device():
    """2 logical CPUs: the first step's losses and update equal one device's on the same global batch."""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "mirrored_parity.py")], cwd=REPO, env=run_env(),
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


def test_killed_run_resumes_strategy_none(tmp_path):
    """SIGKILL after the first checkpoint; the same command again finishes exactly the asked epochs."""
    out = tmp_path / "run"
    args = [*TINY_SET, "--epochs", "3", "--strategy", "none", "--output-dir", str(out)]
    state = kill_after_first_checkpoint(args, out, run_env())
    assert state["epoch"] in (1, 2) and state["step"] == 0
    assert not (out / "metrics.json").exists()
    result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=run_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"resuming from epoch {state['epoch'] + 1}" in result.stdout
    assert f"Epoch {state['epoch']}/3" not in result.stdout  # no finished epoch repeated
    assert history_epochs(out) == [0, 1, 2]
    final = checkpoint_state(out)
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
    with pytest.raises(ResumeError, match="keeps no checkpoint of step 1"):
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
        env = run_env(TF_CONFIG=tf_config, OMP_NUM_THREADS="1")
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


@pytest.mark.large
def test_multiworker_two_local_workers_identical_weights(tmp_path):
    """MultiWorkerMirroredStrategy, 2 processes on 127.0.0.1: an epoch, identical weights."""
    out = tmp_path / "run"
    args = [*TINY_SET, "--epochs", "1", "--strategy", "multiworker", "--output-dir", str(out)]
    processes = _start_workers(args)
    outputs = _finish(processes)
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-4000:]
    assert history_epochs(out) == [0]
    assert (out / "metrics.json").is_file() and (out / "model.keras").is_file()
    chief, other = checkpoint_state(out), checkpoint_state(out / "worker-1")
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


@pytest.mark.slow  # two workers, killed and resumed: bash .ci/run-slow; the default suite keeps strategy none's kill-and-resume and the workers' agreement
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
    args = [*TINY_SET, "--epochs", "4", "--strategy", "multiworker", "--output-dir", str(out)]
    kill_when(_start_workers(args),
               lambda: min((checkpoint_state(o) or {}).get("epoch", 0) for o in (out, out / "worker-1")) >= 2)
    assert not (out / "metrics.json").exists()
    chief = checkpoint_state(out)
    assert chief["epoch"] in (2, 3) and chief["previous"]["epoch"] == chief["epoch"] - 1
    assert len(list((out / "checkpoint").glob("*.weights.h5"))) == 2  # the newest and the one before
    # Worker 1 "was killed before it saved its newest epoch".
    lagging = checkpoint_state(out / "worker-1")
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
    assert history_epochs(out) == [0, 1, 2, 3]
    chief, other = checkpoint_state(out), checkpoint_state(out / "worker-1")
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
    args = ["--logical-cpus", "2", *TINY_SET, "--epochs", "2", "--strategy", "mirrored", "--mixed-precision",
            "--checkpoint-every-steps", "1", "--output-dir", str(out)]
    # float16 is for GPUs: the run refuses it on a CPU unless forced (emulated).
    env = {**run_env(), "KERAS_ADTRS_FORCE_PRECISION": "1"}
    result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 replica(s)" in result.stdout
    assert history_epochs(out) == [0, 1]
    config = json.loads((out / "config.json").read_text())
    assert config["replicas"] == 2 and config["settings"]["precision"] == "mixed_float16"
    assert (out / "metrics.json").is_file()


@pytest.mark.slow
def test_jit_compile_single_device_and_mirrored(tmp_path):
    """`--jit-compile`: the whole step with one device; forward/backward only on 2 mirrored replicas."""
    # --logical-cpus is the helper's own option and must come first.
    for name, prefix, strategy in (("single", [], "none"), ("mirrored", ["--logical-cpus", "2"], "mirrored")):
        out = tmp_path / name
        args = [*prefix, *TINY_SET, "--epochs", "1", "--strategy", strategy, "--jit-compile", "--output-dir", str(out)]
        result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=run_env(), capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        config = json.loads((out / "config.json").read_text())
        assert config["settings"]["jit_compile"] is True
        assert history_epochs(out) == [0]
        metrics = json.loads((out / "metrics.json").read_text())
        assert np.isfinite(checkpoint_state(out)["history"][0]["loss"]), metrics


@pytest.mark.slow
def test_multiworker_jit_compile(tmp_path):
    """`--jit-compile` under MultiWorkerMirroredStrategy on CPUs: XLA for the passes, the all-reduce outside."""
    out = tmp_path / "run"
    args = [*TINY_SET, "--epochs", "1", "--strategy", "multiworker", "--jit-compile", "--output-dir", str(out)]
    processes = _start_workers(args)
    outputs = _finish(processes)
    for process, text in zip(processes, outputs):
        assert process.returncode == 0, text[-4000:]
    chief, other = checkpoint_state(out), checkpoint_state(out / "worker-1")
    assert chief["history"][0]["loss"] == pytest.approx(other["history"][0]["loss"], rel=1e-6)
    assert np.isfinite(chief["history"][0]["loss"])
