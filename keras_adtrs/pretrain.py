"""`python -m keras_adtrs.pretrain`: quality-aware pre-training without human scores.

Trains the ADTRS network on graded synthetic distortions of unlabelled images
(`--images DIR ...`; without it, procedural images) and writes a run folder
whose `model.keras` starts a labelled run: `python -m keras_adtrs.train
--init-from RUN/model.keras ...`. Every option and its default comes from one
table, `keras_adtrs.training.config.PretrainConfig`; see `--help` and
docs/pretraining.md.
"""

import argparse
import dataclasses
import os
import sys

from keras_adtrs import console
from keras_adtrs.errors import ADTRSError, command_message
from keras_adtrs.training.config import PretrainConfig, add_pretrain_arguments


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.pretrain",
        description="Pre-train the ADTRS network on graded synthetic distortions of unlabelled images "
        "(no human scores); fine-tune the result with `python -m keras_adtrs.train --init-from`.",
    )
    return add_pretrain_arguments(parser)


def main(argv=None):
    """Runs the command; returns the exit status (0 on success, 2 on a bad setting or input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = PretrainConfig(**vars(build_parser().parse_args(argv)))
    backend = config.backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    console.select_backend(backend, "keras_adtrs.pretrain", argv)
    config = dataclasses.replace(config, backend=backend)
    console.quiet_tensorflow()
    console.one_line_warnings()
    from keras_adtrs.training.pretraining import run_pretraining

    try:
        run_pretraining(config)
    except ADTRSError as error:
        print(f"error: {command_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
