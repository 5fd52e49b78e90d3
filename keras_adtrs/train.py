"""`python -m keras_adtrs.train`: train, select on validation, test, export.

With no arguments it trains on the embedded default data set with settings
that finish in about 10 minutes on 2 CPU cores. Every option and its default
comes from one table, `keras_adtrs.training.config.TrainConfig`; see `--help`.
`--config FILE` fills the table from a recipe (JSON or YAML); flags given on
the command line override it.

The command owns the process: it chooses the Keras backend, runs the one
training driver (`keras_adtrs.training.run.run_training`, or a protocol:
`--splits`, `--folds`), exports the SavedModel (on the TensorFlow backend),
and turns the library's typed errors into a message naming the flag and
exit status 2. The library is imported in `main()`, after the Keras backend
is chosen and TensorFlow's start-up logging is silenced
(`keras_adtrs.console`).
"""

import argparse
import dataclasses
import importlib.util
import os
import sys

from keras_adtrs import console
from keras_adtrs.errors import ADTRSError, SettingError, command_message
from keras_adtrs.training.config import add_train_arguments, config_from_args, read_recipe
from keras_adtrs.training.run_dir import RunDir


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.train",
        description="Train an ADTRS image quality model, test it and export a SavedModel.",
    )
    return add_train_arguments(parser)


def parse_config(parser, argv):
    """The run's `TrainConfig`: the table's defaults, then the recipe (`--config`), then the flags."""
    args = parser.parse_args(argv)
    if args.config_file:
        try:
            recipe = read_recipe(args.config_file)
        except SettingError as error:  # the recipe's own errors name its file and entry
            parser.error(f"--config: {error.detail}")
        parser.set_defaults(**recipe)
        args = parser.parse_args(argv)
    return config_from_args(args)


def export_run(run, config, say):
    """Exports a run folder's `model.keras` as the SavedModel `RUN/export/adtrs/1` and records it in metrics.json."""
    from keras_adtrs.models import load_model
    from keras_adtrs.serving.export import export_model

    path = export_model(load_model(run.model_path), run.export_dir, num_crops=config.test_crops)
    metrics = run.read_metrics()
    run.write_metrics({**metrics, "export": path})
    say(f"exported {path}")
    return path


def _exported_runs(config, result):
    """The run folders whose model the command exports."""
    base = RunDir(config.output_dir)
    if config.folds > 1:
        return [base.child("final")] if (result or {}).get("final_model") else []
    if config.splits > 1:
        return [base.child(f"split-{k}") for k in range(config.splits)]
    return [] if (result or {}).get("worker") else [base]


def run(config):
    """Runs the training (or protocol) of `config` and the export; returns the result dict."""
    from keras_adtrs.training.config import resolve_defaults
    from keras_adtrs.training.protocol import run_folds, run_repeated
    from keras_adtrs.training.run import run_training

    config = resolve_defaults(config)
    say = print if config.verbose else (lambda *a, **k: None)
    if config.folds > 1:
        result = run_folds(config)
    elif config.splits > 1:
        result = run_repeated(config)
    else:
        result = run_training(config)
    if config.export:
        if config.backend == "jax" and importlib.util.find_spec("tensorflow") is None:
            say("note: no SavedModel export: TensorFlow is not installed (model.keras loads on any backend)")
        elif config.backend == "jax":
            say("note: no SavedModel export on the JAX backend; export model.keras with "
                "`python -m keras_adtrs.export` (TensorFlow)")
        else:
            for folder in _exported_runs(config, result):
                export_run(folder, config, say)
    return result


def main(argv=None):
    """Runs the command; returns the exit status (0 on success, 2 on a bad setting or input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    config = parse_config(parser, argv)
    backend = config.backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    console.select_backend(backend, "keras_adtrs.train", argv)
    config = dataclasses.replace(config, backend=backend)
    console.quiet_tensorflow()  # on JAX it only sets TF_CPP_MIN_LOG_LEVEL: TensorFlow is not imported
    console.one_line_warnings()
    try:
        run(config)
    except ADTRSError as error:
        print(f"error: {command_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
