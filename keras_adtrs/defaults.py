"""One home for every default and name that more than one part of the package shares.

A base module: it imports nothing of the package and no Keras, so the
commands read it before the Keras backend is chosen. Library functions use
these constants as their keyword defaults; the settings tables of
`keras_adtrs.training.config` take theirs from here; and every command
builds the options it shares with another command from `OPTIONS`
(`add_option`), so a default or a help text is written once.

Example:
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = add_option(parser, "crops")
>>> parser.parse_args([]).crops
9
"""

#: Crops of the deterministic test grid averaged per image.
TEST_CROPS = 9
#: Crops per forward call when whole images are scored.
SCORE_BATCH_SIZE = 32
#: Bootstrap resamples of the evaluation's confidence intervals.
BOOTSTRAP_RESAMPLES = 1000

#: Compute precisions (`keras_adtrs.models.precision`).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
#: The precision chosen from the machine: mixed_bfloat16 where bfloat16 runs fast, else float32.
AUTO_PRECISION = "auto"
#: What `--precision` takes.
PRECISION_CHOICES = PRECISIONS + (AUTO_PRECISION,)
#: The precision the predict and evaluate commands (and the Beam job) score a `.keras` model in
#: unless told: bfloat16 and float32 scores of the same weights agree (docs/benchmarks.md).
SCORING_PRECISION = AUTO_PRECISION
#: Scoring jobs of at least this many crops run an inference copy with its weights as
#: graph constants on TensorFlow (`ADTRSModel.use_constant_weights`): seconds once, then
#: faster calls. The break-even measured for it is in docs/benchmarks.md.
CONSTANT_WEIGHTS_MIN_CROPS = 8192
#: Keras backends the package trains and scores on.
BACKENDS = ("tensorflow", "jax")
#: `tf.distribute` strategies of a training run (`keras_adtrs.training.distribute`).
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
#: How an image's crops are chosen when it is scored.
CROP_MODES = ("grid", "random")

#: Data sets built by TFDS builders (`keras_adtrs.data.tfds.<name>`).
TFDS_DATASETS = ("live_iqa", "csiq", "tid2013", "kadid10k", "live_challenge", "koniq10k")
#: Data sets read without TensorFlow (`live_challenge` both ways).
PLAIN_DATASETS = ("default", "csv", "live_challenge")
#: Every built-in data set, in the order the docs list them.
DATASETS = ("default",) + TFDS_DATASETS + ("csv",)
#: Authentic-distortion sets: split by image (every other set by reference image).
AUTHENTIC_DATASETS = ("live_challenge", "koniq10k")

#: Options that several commands share: name -> `argparse.add_argument` keywords
#: (`flags` are the option strings; the destination is the name).
OPTIONS = {
    "crops": {"flags": ("--crops",), "type": int, "default": TEST_CROPS,
              "help": "crops of the deterministic grid averaged per image"},
    "score_batch_size": {"flags": ("--batch-size",), "type": int, "default": SCORE_BATCH_SIZE,
                         "help": "crops per forward call"},
    "precision": {"flags": ("--precision",), "choices": PRECISION_CHOICES, "default": None,
                  "help": "compute precision; auto: mixed_bfloat16 where the machine runs bfloat16 fast "
                          "(AVX512-BF16 or AMX, TPUs, GPUs of compute capability 8.0 or newer), else float32"},
    "backend": {"flags": ("--backend",), "choices": BACKENDS, "default": None,
                "help": "Keras backend (default: $KERAS_BACKEND, else tensorflow)"},
    "dataset": {"flags": ("--dataset",), "choices": DATASETS, "default": None,
                "help": "data set name"},
    "data_dir": {"flags": ("--data-dir",), "default": None, "help": "where data sets are prepared and cached"},
    "manual_dir": {"flags": ("--manual-dir",), "default": None,
                   "help": "folder holding a data set's release files (or the image root of --dataset csv)"},
    "csv": {"flags": ("--csv",), "default": None,
            "help": "scores CSV for --dataset csv (columns: image, score[, reference, std])"},
    "no_progress": {"flags": ("--no-progress",), "action": "store_true", "default": False,
                    "help": "hide the progress bar"},
}


def add_option(parser, name, **overrides):
    """Adds the shared option `name` of `OPTIONS` to `parser` (or an argument group).

    Args:
        parser: an `argparse.ArgumentParser` or argument group.
        name: str. A key of `OPTIONS`; also the parsed attribute's name.
        **overrides: `add_argument` keywords replacing the table's
            (`default`, `help`, ...). The default is appended to the help
            text unless the help already says it.

    Returns:
        The `argparse.Action`.
    """
    spec = {**OPTIONS[name], **overrides}
    flags = spec.pop("flags")
    default = spec.get("default")
    if default not in (None, False) and "default:" not in spec["help"]:
        spec["help"] = f"{spec['help']} (default: {default})"
    return parser.add_argument(*flags, dest=name, **spec)
