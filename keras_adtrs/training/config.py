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
import json
import os
from typing import Optional

from keras_adtrs.defaults import (
    BACKENDS,
    DATASETS,
    OPTIONS,
    PRECISION_CHOICES,
    SCORE_BATCH_SIZE,
    STRATEGIES,
    TEST_CROPS,
)
from keras_adtrs.errors import SettingError
from keras_adtrs.training import run_dir

#: Key of `by_dataset` that holds the default for every other data set.
OTHER_SETS = "*"
GROUPS = ("data", "training", "model", "output")


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


# Rows that both tables hold: each written once here.
def _lr_schedule():
    return _setting("cosine", "learning-rate schedule", "training", choices=("cosine", "constant"))


def _backend():
    return _setting(None, OPTIONS["backend"]["help"], "training", choices=BACKENDS)


def _precision(extra=""):
    return _setting(
        "float32", "compute precision: float32, mixed_bfloat16 (CPUs with AVX512-BF16 or AMX, TPUs, recent GPUs), "
        "mixed_float16 (GPUs; with loss scaling), or auto (mixed_bfloat16 where the machine runs bfloat16 fast, "
        "else float32; the run records the choice); the score head" + extra + " and the loss(es) stay float32",
        "training", choices=PRECISION_CHOICES, aliases={"--mixed-precision": "mixed_float16"})


def _checkpoint_every_steps():
    return _setting(None, "also checkpoint every N steps for resuming (default: each epoch end only)", "training",
                    type=int)


def _architecture():
    return _setting("resnet50", "backbone architecture", "model", choices=("resnet50", "resnet50_v1_5"))


def _batchnorm_momentum():
    return _setting(0.9, "moving-statistics momentum of every BatchNorm", "model", cli=False)


def _keep_checkpoint():
    return _setting(False, "keep the resume checkpoint (OUTPUT_DIR/checkpoint/) after the run ends (default: removed)",
                    "output")


def _verbose():
    return _setting(1, "no progress output", "output", flags=("--quiet", "--no-progress"), action="store_const",
                    const=0)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (written to config.json).

    Fields marked "default: ... on the default set, else ..." default to
    `None`, meaning the data set's default (see `resolve_defaults`).
    """

    # ------------------------------------------------------------------ data
    dataset: str = _setting("default", f"data set name: {', '.join(DATASETS)}, or one added with register_source",
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
    folds: int = _setting(
        1, "K-fold cross-validation grouped by reference image: every image tested once, the out-of-fold "
        "predictions pooled (one SRCC/PLCC with bootstrap intervals, per fold and per epoch)", "data", type=int)
    final_model: bool = _setting(
        True, "with --folds: skip the final model trained on every image for the epoch count the folds chose",
        "data")
    validation_fraction: float = _setting(
        0.1, "share of training groups used to select the epoch", "data", type=float)
    # -------------------------------------------------------------- training
    crop_size: Optional[int] = _setting(
        None, "crop side, a multiple of 32 in 64..512", "training", by_dataset={"default": 64, OTHER_SETS: 224},
        type=int)
    crops_per_image: Optional[int] = _setting(
        None, "random crops per training image per epoch", "training", by_dataset={"default": 2, OTHER_SETS: 25},
        type=int)
    test_crops: int = _setting(TEST_CROPS, "crops of the deterministic grid averaged per test image", "training",
                               type=int)
    batch_size: int = _setting(16, "global batch size", "training", type=int)
    score_batch_size: int = _setting(
        SCORE_BATCH_SIZE, "crops per forward call when scoring whole images (validation and test)", "training",
        type=int)
    epochs: Optional[int] = _setting(
        None, "epochs", "training", by_dataset={"default": 8, OTHER_SETS: 10}, type=int)
    steps_per_epoch: Optional[int] = _setting(
        None, "cap the steps of each epoch (default: one pass over the crops)", "training", type=int)
    learning_rate: Optional[float] = _setting(
        None, "Adam learning rate", "training", by_dataset={"default": 5e-4, OTHER_SETS: 1e-4}, type=float)
    lr_schedule: str = _lr_schedule()
    backbone_lr_ratio: float = _setting(
        1.0, "learning rate of the backbone and the attention block relative to the head's", "training", type=float)
    freeze_batchnorm: bool = _setting(
        False, "run every BatchNorm in inference mode with fixed statistics (and scale and offset)", "training")
    linear_probe_epochs: int = _setting(
        0, "train the head alone for the first N epochs (the network in inference mode), then everything",
        "training", type=int)
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
        "auto", "tf.distribute strategy: auto (all GPUs when >1), none, mirrored, multiworker (TF_CONFIG); the JAX "
        "backend trains on one device (auto or none)", "training", choices=STRATEGIES)
    jit_compile: bool = _setting(False, "compile the train step with XLA (always, on the JAX backend)", "training")
    backend: Optional[str] = _backend()
    precision: str = _precision()
    checkpoint_every_steps: Optional[int] = _checkpoint_every_steps()
    # ----------------------------------------------------------------- model
    backbone: str = _architecture()
    backbone_weights: Optional[str] = _setting(
        "imagenet", "imagenet, a local weights file, or none", "model", type=_none_or_str)
    layer4_pooling: str = _setting("global", "pooling of layer 4 in the head", "model", choices=("global", "top_left"))
    init_from: Optional[str] = _setting(
        None, "a .keras file (pretrain's model.keras, or any earlier run's): start from its backbone and "
        "attention-block weights; the head and the score scale come from the new labels", "model", metavar="PATH")
    batchnorm_momentum: float = _batchnorm_momentum()
    standardize_labels: bool = _setting(
        True, "let the head learn raw label units (default: standardised, scaled back)", "model")
    # ---------------------------------------------------------------- output
    output_dir: Optional[str] = _setting(None, "run folder (default: runs/<dataset>-<timestamp>)", "output")
    config_file: Optional[str] = _setting(
        None, "a recipe: a JSON or YAML file of settings (names as here, with - or _) that fills this table; "
        "flags given on the command line override it", "output", flags=("--config",), metavar="FILE")
    export: bool = _setting(True, "skip the SavedModel export", "output")
    keep_checkpoint: bool = _keep_checkpoint()
    verbose: int = _verbose()


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
    lr_schedule: str = _lr_schedule()
    seed: int = _setting(0, "seed of the crops, distortions and initialisation", "training", type=int)
    backend: Optional[str] = _backend()
    precision: str = _precision(", the classifier")
    checkpoint_every_steps: Optional[int] = _checkpoint_every_steps()
    # ----------------------------------------------------------------- model
    backbone: str = _architecture()
    batchnorm_momentum: float = _batchnorm_momentum()
    # ---------------------------------------------------------------- output
    output_dir: Optional[str] = _setting(None, "run folder (default: runs/pretrain-<timestamp>)", "output")
    keep_checkpoint: bool = _keep_checkpoint()
    verbose: int = _verbose()


def parse_loss_weights(text):
    """`"ranking=0,consistency=0.5"` -> `{"ranking": 0.0, "consistency": 0.5}` (None -> `{}`).

    Raises:
        SettingError: a malformed entry, an unknown term or a value that is not
            a finite number >= 0 (the message names it).
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
            raise SettingError("loss_weights", f"{entry.strip()!r} is not TERM=WEIGHT with a term of "
                               f"{', '.join(DEFAULT_LOSS_WEIGHTS)}")
        try:
            weight = float(value)
        except ValueError:
            raise SettingError("loss_weights", f"{name}={value.strip()!r} is not a number") from None
        if not (weight >= 0 and weight != float("inf")):
            raise SettingError("loss_weights", f"{name} must be a finite number >= 0, got {value.strip()}")
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
        if field.metadata["cli"]:
            _add_field(groups[field.metadata["group"]], field)
    return parser


def _add_field(parser, field, flags=None, dest=None, default=dataclasses.MISSING, default_text=None):
    meta = field.metadata
    option = "--" + field.name.replace("_", "-")
    kwargs = dict(meta["argparse"])
    if field.type is bool or isinstance(field.default, bool):
        if field.default:
            flags = flags or meta["flags"] or ("--no-" + field.name.replace("_", "-"),)
            kwargs.setdefault("action", "store_false")
        else:
            flags = flags or meta["flags"] or (option,)
            kwargs.setdefault("action", "store_true")
    else:
        flags = flags or meta["flags"] or (option,)
    help_text = meta["help"]
    default_text = default_text or _default_text(field)
    if default_text:
        help_text += f" ({default_text})"
    dest = dest or field.name
    parser.add_argument(*flags, dest=dest, default=field.default if default is dataclasses.MISSING else default,
                        help=help_text, **kwargs)
    for alias, value in meta.get("aliases", {}).items():
        parser.add_argument(alias, dest=dest, action="store_const", const=value, default=argparse.SUPPRESS,
                            help=f"same as {flags[0]} {value}")


def add_setting_option(parser, name, flags=None, dest=None, default=dataclasses.MISSING, default_text=None,
                       config_class=None):
    """Adds the option of one setting of the table (`TrainConfig` by default) to another command's parser.

    Commands that share a setting with `train` (`evaluate`: the data set,
    its folders, the split) build its option from the same row: its help,
    type and choices are written once.

    Args:
        parser: an `argparse.ArgumentParser` or argument group.
        name: str. The setting (a field of the table).
        flags: tuple of str or None. Other option strings (default: the table's).
        dest: str or None. The parsed attribute (default: `name`).
        default: the option's default (default: the table's).
        default_text: str or None. What the help says of the default
            (for instance "default: the run's").

    Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_setting_option(parser, "seed", default=None, default_text="default: the run's")
    >>> parser.parse_args(["--seed", "3"]).seed
    3
    """
    fields = {f.name: f for f in dataclasses.fields(config_class or TrainConfig)}
    _add_field(parser, fields[name], flags=flags, dest=dest, default=default, default_text=default_text)


def config_from_args(args):
    """`TrainConfig` from the namespace of a parser built by `add_train_arguments`."""
    return TrainConfig(**vars(args))


def check_train_config(config):
    """Validates the settings a run needs before any work; returns `config`.

    Raises:
        SettingError: the first setting out of range or in conflict (the
            message names it and its value).
    """
    def whole(name, low):
        value = getattr(config, name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SettingError(name, f"must be a whole number >= {low}, got {value!r}")

    for name, low in (("splits", 1), ("folds", 1), ("epochs", 1), ("batch_size", 1), ("crops_per_image", 1),
                      ("test_crops", 1), ("score_batch_size", 1), ("steps_per_epoch", 1), ("warmup_epochs", 0),
                      ("linear_probe_epochs", 0), ("checkpoint_every_steps", 1)):
        whole(name, low)
    if config.splits > 1 and config.folds > 1:
        raise SettingError("folds", f"and splits are two protocols: pass one (got folds {config.folds}, "
                           f"splits {config.splits})")
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise SettingError("learning_rate", f"must be positive, got {config.learning_rate}")
    if not 0.0 <= config.backbone_lr_ratio <= 1e3:
        raise SettingError("backbone_lr_ratio", f"must lie in [0, 1000], got {config.backbone_lr_ratio}")
    if config.epochs is not None and config.linear_probe_epochs > config.epochs:
        raise SettingError("linear_probe_epochs", f"({config.linear_probe_epochs}) cannot exceed the epochs "
                           f"({config.epochs})")
    parse_loss_weights(config.loss_weights)
    return config


def _coerce(field, value, path):
    """A recipe value as the setting's option would parse it (its type and choices)."""
    meta = field.metadata
    kind = meta["argparse"].get("type")
    if value is not None and kind is not None and not isinstance(value, bool):
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise SettingError("config_file", f"{path}: {field.name} = {value!r} is not a {kind.__name__}") from None
    if isinstance(field.default, bool) and not isinstance(value, bool):
        raise SettingError("config_file", f"{path}: {field.name} = {value!r} must be true or false")
    choices = meta["argparse"].get("choices")
    if choices and value is not None and value not in choices:
        raise SettingError("config_file", f"{path}: {field.name} = {value!r} is not one of {', '.join(choices)}")
    return value


def read_recipe(path, config_class=None):
    """The settings of a recipe file: JSON (`.json`) or YAML (`.yaml`, `.yml`), a mapping of setting -> value.

    Setting names are the table's (`crop_size`, or `crop-size`). Values
    take the setting's type (`"5"` for an int setting becomes 5).

    Args:
        path: str. The file.
        config_class: the settings table (`TrainConfig`, the default).

    Returns:
        dict field name -> value.

    Raises:
        SettingError: no such file, not a mapping, an unknown setting or a
            value of the wrong type (setting `config_file`; the message names
            the file and the entry).
    """
    config_class = config_class or TrainConfig
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SettingError("config_file", f"{path}: cannot be read ({exc.strerror or exc})") from None
    if path.lower().endswith((".yaml", ".yml")):
        import yaml  # imported when a YAML recipe is read

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingError("config_file", f"{path}: not valid YAML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingError("config_file", f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SettingError("config_file", f"{path}: expected a mapping of settings, found {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    settings = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in fields or name == "config_file":
            raise SettingError("config_file", f"{path}: unknown setting {key!r}")
        settings[name] = _coerce(fields[name], value, path)
    return settings
