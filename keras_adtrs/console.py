"""Clean command-line output: silence TensorFlow's start-up log lines.

TensorFlow 2.21 writes absl log lines to stderr while it is imported and
when it first looks for devices, before `TF_CPP_MIN_LOG_LEVEL` takes effect.
`quiet_tensorflow()` imports it with file descriptor 2 pointed at /dev/null
(Python warnings and errors are unaffected afterwards). Set
`KERAS_ADTRS_VERBOSE=1` to see everything.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
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


def quiet_tensorflow(verbose=None):
    """Imports TensorFlow and Keras quietly unless `verbose` (or KERAS_ADTRS_VERBOSE=1)."""
    if verbose is None:
        verbose = os.environ.get("KERAS_ADTRS_VERBOSE", "") not in ("", "0")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced():
        try:
            import tensorflow as tf
        except ModuleNotFoundError as exc:
            if exc.name != "tensorflow":
                raise
            return
        import keras  # noqa: F401

        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()
        if not os.environ.get("TF_CONFIG"):
            # Multi-worker training (TF_CONFIG) must configure collective ops
            # before the TensorFlow context starts: leave that to the strategy.
            tf.constant(0.0) + 1.0  # first device initialisation logs here


def one_line_warnings():
    """Command lines: print each Python warning as one `warning: ...` line on stderr."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
