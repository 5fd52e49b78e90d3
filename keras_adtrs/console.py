"""Clean command-line output: the one place that quiets logs (imports nothing of ours).

- `quiet_tensorflow()`: TensorFlow 2.21 writes absl log lines to stderr while
  it is imported and when it first looks for devices, before
  `TF_CPP_MIN_LOG_LEVEL` takes effect; this sets the variable and imports
  TensorFlow (and Keras) with file descriptor 2 pointed at /dev/null (Python
  warnings and errors are unaffected afterwards). Under another Keras
  backend (`KERAS_BACKEND=jax`) it only sets the variable: TensorFlow is not
  imported. Set `KERAS_ADTRS_VERBOSE=1` to see everything.
- `one_line_warnings()`: each Python warning as one `warning: ...` line.
- `filtered_stderr()`: replays what C/C++ code writes to stderr minus the
  noise (libjpeg's warnings on broken files, TensorFlow's log lines).
- `stderr_silenced()`: file descriptor 2 to /dev/null for a block.
- `quiet_beam(beam_args)`: Apache Beam's logs at WARNING in this process,
  and the workers' at ERROR (the pipeline option it adds to `beam_args`);
  `live_filtered_stderr(BEAM_NOISE)` drops what its worker processes still
  write to the inherited stderr, line by line as it comes.

The commands call `quiet_tensorflow` in their `main()` before they import the
library (`train` and `evaluate` also `one_line_warnings`); the library never
changes logging, and importing it changes nothing.
"""

import contextlib
import os
import re
import sys
import tempfile
import warnings

# libjpeg's chatter on broken files (the error itself comes back as an
# exception) and TensorFlow's C++ log lines printed while an op first runs.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog|^[IW]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\]|"
    r"^To enable the following instructions|rebuild TensorFlow with the appropriate compiler|"
    r"^Improper call to JPEG library|^Corrupt JPEG data|^Premature end of JPEG|^libpng (warning|error)"
)


def verbose_requested():
    """Whether `KERAS_ADTRS_VERBOSE` asks for every log line."""
    return os.environ.get("KERAS_ADTRS_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def stderr_silenced():
    """File descriptor 2 (what C/C++ code writes to) goes to /dev/null inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def select_backend(backend, module, argv):
    """Makes Keras run on `backend`: sets KERAS_BACKEND before keras is imported.

    When keras is already imported on another backend (an embedding program),
    the command `python -m <module> <argv>` starts again with KERAS_BACKEND set
    (`os.execve`).
    """
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        env = dict(os.environ, KERAS_BACKEND=backend)
        os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)
    os.environ["KERAS_BACKEND"] = backend


def quiet_tensorflow(verbose=None):
    """Imports TensorFlow and Keras quietly, unless `verbose` (or `KERAS_ADTRS_VERBOSE=1`).

    Under another Keras backend (`KERAS_BACKEND` set and not `tensorflow`)
    only `TF_CPP_MIN_LOG_LEVEL` is set: TensorFlow is not imported.
    """
    if verbose is None:
        verbose = verbose_requested()
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    with stderr_silenced():
        try:
            import tensorflow as tf
        except ModuleNotFoundError as exc:
            if exc.name != "tensorflow":
                raise
            return
        import keras  # noqa: F401  (its first import starts TensorFlow's device look-up)

        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()
        if not os.environ.get("TF_CONFIG"):
            # Multi-worker training (TF_CONFIG) must configure collective ops
            # before the TensorFlow context starts: leave that to the strategy.
            tf.constant(0.0) + 1.0  # first device initialisation logs here


#: What Apache Beam's DirectRunner and its worker processes write to stderr that says nothing to a
#: user: their logging set-up, and warnings about optional libraries and platform features (Beam
#: 2.78's RunInference warns at every model load when torch is not installed).
BEAM_NOISE = re.compile(
    r"^INFO:|Logging handler created|No semi_persistent_directory|Discarding unparseable args|apitools not found|"
    r"Resource module is not available|^WARNING: All log messages before absl"
)


def quiet_beam(beam_args, verbose=None):
    """Beam's pipeline options with its workers' logs at ERROR, and this process's Beam logger at WARNING.

    Unless `verbose` (or `KERAS_ADTRS_VERBOSE=1`), or the options already set
    a level. Returns the options (a new list).
    """
    import logging

    args = list(beam_args)
    if verbose is None:
        verbose = verbose_requested()
    if verbose:
        return args
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=ERROR")
    return args


def one_line_warnings():
    """Command lines: print each Python warning as one `warning: ...` line on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


@contextlib.contextmanager
def filtered_stderr(pattern=NOISE):
    """Captures what C/C++ code writes to file descriptor 2 and replays all but the noise.

    Python-level `sys.stderr` output inside the block is captured too and
    replayed afterwards, in order, minus lines matching `pattern`.

    Args:
        pattern: compiled regex of the lines to drop. Defaults to
            TensorFlow's start-up lines and libjpeg's warnings.

    Example:
    >>> with filtered_stderr():  # doctest: +SKIP
    ...     import tensorflow
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if line.strip() and not pattern.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextlib.contextmanager
def live_filtered_stderr(pattern=NOISE):
    """File descriptor 2 through a filter, line by line as it comes: lines matching `pattern` (or `NOISE`) are dropped.

    Unlike `filtered_stderr`, lines are replayed at once (progress stays
    live), and what child processes that inherit file descriptor 2 write
    (Beam's worker processes) passes through the filter too.
    """
    import threading

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as lines:
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if line.strip() and not pattern.search(line) and not NOISE.search(line):
                    os.write(saved, raw)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes the pipe's last write end held here: the pump ends once children exit
        thread.join(timeout=5)
        os.close(saved)
