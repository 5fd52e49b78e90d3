"""Every setting of a training run and its default, in one table: `TrainConfig`.

Each field of `TrainConfig` carries its default, its help text, its
command-line group and (for a few) its default per data set. The train
command's parser is built from the table (`add_train_arguments`), the
evaluate command takes its shared defaults from it (`default_for`), and
`resolve_defaults` fills in the per-data-set values. A run writes the
resolved settings to `config.json` (`keras_adtrs.training.run_dir`).

Example:
>>> config = resolve_defaults(TrainConfig(dataset="koniq10k"))
>>> config.crop_size, config.epochs
(224, 10)
"""

import argparse
import dataclasses
from typing import Optional

from keras_adtrs.training import run_dir

#: Key of `by_dataset` that holds the default for every other data set.
OTHER_SETS = "*"
GROUPS = ("data", "training", "model", "output")
#: `keras_adtrs.models.precision.PRECISIONS` (not imported: this module is read before the Keras backend is chosen).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _none_or_str(value):
    return None if value.lower() == "none" else value


def _setting(default, help, group, *, by_dataset=None, flags=None, cli=True, aliases=None, **argparse_kwargs):
    """One row of the table: a dataclass field whose metadata describes its option.

    Args:
        default: the field's default (`None` with `by_dataset`: "the data set's").
        help: str. Help text, without the default (added from the table).
        group: str. One of `GROUPS` (the `--help` section).
        by_dataset: dict or None. Data set name -> default; `OTHER_SETS`
            holds the default of every other set.
        flags: tuple of str or None. Option strings; default `--field-name`
            (`--no-field-name` for a bool that defaults to True).
        cli: bool. False for settings without an option.
        aliases: dict or None. Further flags without a value, each setting the
            field to its value (kept for older command lines).
        **argparse_kwargs: `type`, `choices`, `action`, `const`, `metavar`.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")
    metadata = {"help": help, "group": group, "by_dataset": by_dataset, "flags": flags, "cli": cli,
                "aliases": aliases or {}, "argparse": argparse_kwargs}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (written to config.json).

    Fields marked "default: ... on the default set, else ..." default to
    `None`, meaning the data set's default (see `resolve_defaults`).
    """

    # ------------------------------------------------------------------ data
    dataset: str = _setting(
        "default", "data set name: default, live_iqa, csiq, tid2013, kadid10k, live_challenge, koniq10k or csv",
        "data")
    data_dir: Optional[str] = _setting(None, "where data sets are prepared and cached", "data")
    manual_dir: Optional[str] = _setting(
        None, "folder holding a data set's release files (or the image root of --dataset csv)", "data")
    csv: Optional[str] = _setting(
        None, "scores CSV for --dataset csv (columns: image, score[, reference, std])", "data")
    test_fraction: float = _setting(
        0.2, "share of groups held out for test; 0 trains on everything (with --validation-fraction for the "
        "epoch)", "data", type=float)
    splits: int = _setting(
        1, "repeat on N seeded splits (seeds seed..seed+N-1) and report the median", "data", type=int)
    validation_fraction: float = _setting(
        0.1, "share of training groups used to select the epoch", "data", type=float)
    # -------------------------------------------------------------- training
    crop_size: Optional[int] = _setting(
        None, "crop side, a multiple of 32 in 64..512", "training", by_dataset={"default": 64, OTHER_SETS: 224},
        type=int)
    crops_per_image: Optional[int] = _setting(
        None, "random crops per training image per epoch", "training", by_dataset={"default": 2, OTHER_SETS: 25},
        type=int)
    test_crops: int = _setting(9, "crops of the deterministic grid averaged per test image", "training", type=int)
    batch_size: int = _setting(16, "global batch size", "training", type=int)
    score_batch_size: int = _setting(
        32, "crops per forward call when scoring whole test images", "training", type=int)
    epochs: Optional[int] = _setting(
        None, "epochs", "training", by_dataset={"default": 8, OTHER_SETS: 10}, type=int)
    steps_per_epoch: Optional[int] = _setting(
        None, "cap the steps of each epoch (default: one pass over the crops)", "training", type=int)
    learning_rate: Optional[float] = _setting(
        None, "Adam learning rate", "training", by_dataset={"default": 5e-4, OTHER_SETS: 1e-4}, type=float)
    lr_schedule: str = _setting("cosine", "learning-rate schedule", "training", choices=("cosine", "constant"))
    warmup_epochs: Optional[int] = _setting(
        None, "first epochs trained on the quality terms only", "training",
        by_dataset={"default": 7, OTHER_SETS: 0}, type=int)
    weight_decay: float = _setting(0.0, "coupled L2 weight decay, as the authors' Adam", "training", type=float)
    loss_weights: Optional[str] = _setting(
        None, "weights of the objective's terms, e.g. ranking=0,ranking_consistency=0 for the quality and "
        "self-consistency terms only (terms: quality, consistency, ranking, ranking_consistency; default: "
        "1, 1, 0.05, 1, the authors')", "training", metavar="TERM=W,...")
    seed: int = _setting(0, "seed of the split, crops and initialisation", "training", type=int)
    strategy: str = _setting(
        "auto", "tf.distribute strategy: auto (all GPUs when >1), none, mirrored, multiworker (TF_CONFIG)",
        "training", choices=("auto", "none", "mirrored", "multiworker"))
    jit_compile: bool = _setting(False, "compile the train step with XLA", "training")
    backend: Optional[str] = _setting(
        None, "Keras backend (default: $KERAS_BACKEND, else tensorflow); jax uses the numpy input pipeline and "
        "writes no SavedModel", "training", choices=("tensorflow", "jax"))
    precision: str = _setting(
        "float32", "compute precision: float32, mixed_bfloat16 (CPUs with AVX512-BF16 or AMX, TPUs, recent GPUs) "
        "or mixed_float16 (GPUs; with loss scaling); the score head and the loss stay float32", "training",
        choices=PRECISIONS, aliases={"--mixed-precision": "mixed_float16"})
    checkpoint_every_steps: Optional[int] = _setting(
        None, "also checkpoint every N steps for resuming (default: each epoch end only)", "training", type=int)
    # ----------------------------------------------------------------- model
    backbone: str = _setting("resnet50", "backbone", "model", choices=("resnet50", "resnet50_v1_5"))
    backbone_weights: Optional[str] = _setting(
        "imagenet", "imagenet, a local weights file, or none", "model", type=_none_or_str)
    layer4_pooling: str = _setting("global", "pooling of layer 4 in the head", "model", choices=("global", "top_left"))
    init_from: Optional[str] = _setting(
        None, "a .keras file (pretrain's model.keras, or any earlier run's): start from its backbone and "
        "attention-block weights; the head and the score scale come from the new labels", "model", metavar="PATH")
    batchnorm_momentum: float = _setting(0.9, "moving-statistics momentum of every BatchNorm", "model", cli=False)
    standardize_labels: bool = _setting(
        True, "let the head learn raw label units (default: standardised, scaled back)", "model")
    # ---------------------------------------------------------------- output
    output_dir: Optional[str] = _setting(None, "run folder (default: runs/<dataset>-<timestamp>)", "output")
    export: bool = _setting(True, "skip the SavedModel export", "output")
    keep_checkpoint: bool = _setting(
        False, "keep the resume checkpoint (OUTPUT_DIR/checkpoint/) after the run ends (default: removed)",
        "output")
    verbose: int = _setting(
        1, "no progress output", "output", flags=("--quiet", "--no-progress"), action="store_const", const=0)


@dataclasses.dataclass
class PretrainConfig:
    """Every setting of a pre-training run (`python -m keras_adtrs.pretrain`; written to config.json).

    Pre-training uses no human score: it learns from graded synthetic
    distortions of unlabelled images (`keras_adtrs.training.pretraining`).
    """

    # ------------------------------------------------------------------ data
    images: Optional[list] = _setting(
        None, "folders (searched recursively) or files of unlabelled photos (default: the default set's "
        "procedural generator, with seeds the default set does not use)", "data", nargs="+", metavar="DIR")
    procedural_references: int = _setting(
        2000, "procedural reference images drawn when no --images is given", "data", type=int)
    kinds: str = _setting(
        "all", "distortions, comma-separated names of keras_adtrs.data.distortions.KINDS, or all", "data")
    # -------------------------------------------------------------- training
    objective: str = _setting(
        "ranking+classification", "ranking, classification, fr (full-reference weak labels), or terms joined by +",
        "training")
    crop_size: int = _setting(96, "crop side, a multiple of 32 in 64..512", "training", type=int)
    groups: int = _setting(
        6, "groups per batch; a group is one crop, pristine and at graded levels of one distortion", "training",
        type=int)
    levels: int = _setting(4, "crops per group: the pristine crop and distinct distortion levels (2..6)",
                           "training", type=int)
    steps: int = _setting(3000, "training steps in all", "training", type=int)
    steps_per_epoch: int = _setting(250, "steps between progress lines and checkpoints", "training", type=int)
    learning_rate: float = _setting(1e-3, "Adam learning rate", "training", type=float)
    lr_schedule: str = _setting("cosine", "learning-rate schedule", "training", choices=("cosine", "constant"))
    seed: int = _setting(0, "seed of the crops, distortions and initialisation", "training", type=int)
    backend: Optional[str] = _setting(
        None, "Keras backend (default: $KERAS_BACKEND, else tensorflow)", "training", choices=("tensorflow", "jax"))
    precision: str = _setting(
        "float32", "compute precision: float32, mixed_bfloat16 (CPUs with AVX512-BF16 or AMX, TPUs, recent GPUs) "
        "or mixed_float16 (GPUs; with loss scaling); the score, the classifier and the losses stay float32; "
        "the saved model keeps it (train --precision sets the fine-tuning run's own)", "training",
        choices=PRECISIONS)
    checkpoint_every_steps: Optional[int] = _setting(
        None, "also checkpoint every N steps for resuming (default: each epoch end only)", "training", type=int)
    # ----------------------------------------------------------------- model
    backbone: str = _setting("resnet50", "backbone", "model", choices=("resnet50", "resnet50_v1_5"))
    batchnorm_momentum: float = _setting(0.9, "moving-statistics momentum of every BatchNorm", "model", cli=False)
    # ---------------------------------------------------------------- output
    output_dir: Optional[str] = _setting(None, "run folder (default: runs/pretrain-<timestamp>)", "output")
    keep_checkpoint: bool = _setting(
        False, "keep the resume checkpoint (OUTPUT_DIR/checkpoint/) after the run ends (default: removed)",
        "output")
    verbose: int = _setting(
        1, "no progress output", "output", flags=("--quiet", "--no-progress"), action="store_const", const=0)


def parse_loss_weights(text):
    """`"ranking=0,consistency=0.5"` -> `{"ranking": 0.0, "consistency": 0.5}` (None -> `{}`).

    Raises:
        ValueError: a malformed entry, an unknown term or a value that is not a
            finite number >= 0 (the message names it).
    """
    # Imported here: this module is read before the command has chosen the Keras backend.
    from keras_adtrs.models.objective import DEFAULT_LOSS_WEIGHTS

    weights = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        name, sep, value = entry.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_LOSS_WEIGHTS:
            raise ValueError(f"--loss-weights: {entry.strip()!r} is not TERM=WEIGHT with a term of "
                             f"{', '.join(DEFAULT_LOSS_WEIGHTS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"--loss-weights: {name}={value.strip()!r} is not a number") from None
        if not (weight >= 0 and weight != float("inf")):
            raise ValueError(f"--loss-weights: {name} must be a finite number >= 0, got {value.strip()}")
        weights[name] = weight
    return weights


def _field(name):
    for field in dataclasses.fields(TrainConfig):
        if field.name == name:
            return field
    raise KeyError(f"TrainConfig has no setting {name!r}")


def default_for(name, dataset=None):
    """The default of setting `name` (for `dataset`, when it depends on the data set).

    Example:
    >>> default_for("test_crops"), default_for("crop_size", "default"), default_for("crop_size", "csiq")
    (9, 64, 224)
    """
    field = _field(name)
    by_dataset = field.metadata["by_dataset"]
    if by_dataset is None:
        return field.default
    return by_dataset.get(dataset, by_dataset[OTHER_SETS])


def resolve_defaults(config):
    """Fills `None` settings with the data set's defaults and the output folder; returns a new config."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        if field.metadata["by_dataset"] is not None and getattr(config, field.name) is None:
            values[field.name] = default_for(field.name, config.dataset)
    if config.output_dir is None:
        values["output_dir"] = run_dir.default_path(config.dataset)
    return dataclasses.replace(config, **values)


def _default_text(field):
    by_dataset = field.metadata["by_dataset"]
    if by_dataset is not None:
        named = ", ".join(f"{v} on the {k} set" for k, v in by_dataset.items() if k != OTHER_SETS)
        return f"default: {named}, else {by_dataset[OTHER_SETS]}"
    if isinstance(field.default, bool) or field.default is None or "default:" in field.metadata["help"]:
        return None
    return f"default: {field.default}"


def add_train_arguments(parser):
    """Adds one option per setting of `TrainConfig` to `parser` (see `add_arguments`)."""
    return add_arguments(parser, TrainConfig)


def add_pretrain_arguments(parser):
    """Adds one option per setting of `PretrainConfig` to `parser` (see `add_arguments`)."""
    return add_arguments(parser, PretrainConfig)


def add_arguments(parser, config_class):
    """Adds one option per setting of `config_class` to `parser`, in argument groups.

    Bool settings that default to False become `--name` flags; those that
    default to True become `--no-name`. Parsed values use the field names, so
    `config_class(**vars(parser.parse_args()))` is the run's config.
    """
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        if not meta["cli"]:
            continue
        option = "--" + field.name.replace("_", "-")
        kwargs = dict(meta["argparse"])
        if field.type is bool or isinstance(field.default, bool):
            if field.default:
                flags = meta["flags"] or ("--no-" + field.name.replace("_", "-"),)
                kwargs.setdefault("action", "store_false")
            else:
                flags = meta["flags"] or (option,)
                kwargs.setdefault("action", "store_true")
        else:
            flags = meta["flags"] or (option,)
        help_text = meta["help"]
        default_text = _default_text(field)
        if default_text:
            help_text += f" ({default_text})"
        groups[meta["group"]].add_argument(*flags, dest=field.name, default=field.default, help=help_text, **kwargs)
        for alias, value in meta.get("aliases", {}).items():
            groups[meta["group"]].add_argument(alias, dest=field.name, action="store_const", const=value,
                                               default=argparse.SUPPRESS, help=f"same as {flags[0]} {value}")
    return parser


def config_from_args(args):
    """`TrainConfig` from the namespace of a parser built by `add_train_arguments`."""
    return TrainConfig(**vars(args))
