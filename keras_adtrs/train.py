"""`python -m keras_adtrs.train`: train, select on validation, test, export.

With no arguments it trains on the embedded default data set with settings
that finish in about 10 minutes on 2 CPU cores. Every option and its default
comes from one table, `keras_adtrs.training.config.TrainConfig`; see `--help`.

The training loops are imported in `main()`, after the Keras backend is
chosen and TensorFlow's start-up logging is silenced (`keras_adtrs.console`).
"""

import argparse
import dataclasses
import os
import sys

from keras_adtrs import console
from keras_adtrs.training.config import add_train_arguments, config_from_args
from keras_adtrs.training.protocol import run_repeated


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.train",
        description="Train an ADTRS image quality model, test it and export a SavedModel.",
    )
    return add_train_arguments(parser)


def main(argv=None):
    """Runs the command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    config = config_from_args(parser.parse_args(argv))
    if config.splits < 1:
        parser.error(f"--splits must be at least 1, got {config.splits}")
    backend = config.backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    console.select_backend(backend, "keras_adtrs.train", argv)
    config = dataclasses.replace(config, backend=backend)
    console.quiet_tensorflow()  # on JAX it only sets TF_CPP_MIN_LOG_LEVEL: TensorFlow is not imported
    if backend == "jax":
        from keras_adtrs.training.loop_jax import run_training_jax as run_one
    else:
        from keras_adtrs.training.loop_tensorflow import run_training as run_one
    console.one_line_warnings()
    if config.splits > 1:
        run_repeated(config, run_one)
    else:
        run_one(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
