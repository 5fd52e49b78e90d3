"""`python -m keras_adtrs.train`: train, select on validation, test, export.

With no arguments it trains on the embedded default data set with settings
that finish in about 10 minutes on 2 CPU cores. See `--help`.
"""

import argparse
import sys


def _none_or_str(value):
    return None if value.lower() == "none" else value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.train",
        description="Train an ADTRS image quality model, test it and export a SavedModel.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="default", help="data set name: default, live_iqa, csiq, tid2013, kadid10k, live_challenge, koniq10k or csv (default: default)")
    data.add_argument("--data-dir", help="where data sets are prepared and cached")
    data.add_argument("--manual-dir", help="folder holding a data set's release files (or the image root of --dataset csv)")
    data.add_argument("--csv", help="scores CSV for --dataset csv (columns: image, score[, reference, std])")
    data.add_argument("--test-fraction", type=float, default=0.2, help="share of groups held out for test (default: 0.2)")
    data.add_argument("--splits", type=int, default=1, help="repeat on N seeded splits (seeds seed..seed+N-1) and report the median (default: 1)")
    data.add_argument("--validation-fraction", type=float, default=0.1, help="share of training groups used to select the epoch (default: 0.1)")
    train = parser.add_argument_group("training")
    train.add_argument("--crop-size", type=int, help="crop side, a multiple of 32 in 64..512 (default: 64 on the default set, else 224)")
    train.add_argument("--crops-per-image", type=int, help="random crops per training image per epoch (default: 2 on the default set, else 25)")
    train.add_argument("--test-crops", type=int, default=9, help="crops of the deterministic grid averaged per test image (default: 9)")
    train.add_argument("--batch-size", type=int, default=16, help="global batch size (default: 16)")
    train.add_argument("--epochs", type=int, help="epochs (default: 8 on the default set, else 10)")
    train.add_argument("--steps-per-epoch", type=int, help="cap the steps of each epoch (default: one pass over the crops)")
    train.add_argument("--learning-rate", type=float, help="Adam learning rate (default: 5e-4 on the default set, else 1e-4)")
    train.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine", help="learning-rate schedule (default: cosine)")
    train.add_argument("--warmup-epochs", type=int, help="first epochs trained on the quality terms only (default: 3 on the default set, else 0)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="coupled L2 weight decay, as the authors' Adam (default: 0)")
    train.add_argument("--seed", type=int, default=0, help="seed of the split, crops and initialisation (default: 0)")
    train.add_argument("--strategy", choices=("auto", "none", "mirrored", "multiworker"), default="auto", help="tf.distribute strategy: auto (all GPUs when >1), none, mirrored, multiworker (TF_CONFIG) (default: auto)")
    train.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    train.add_argument("--backend", choices=("tensorflow", "jax"), help="Keras backend (default: $KERAS_BACKEND, else tensorflow); jax uses the numpy input pipeline and writes no SavedModel")
    train.add_argument("--mixed-precision", action="store_true", help="mixed_float16 compute with loss scaling; score head and losses in float32")
    train.add_argument("--checkpoint-every-steps", type=int, help="also checkpoint every N steps for resuming (default: each epoch end only)")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=("resnet50", "resnet50_v1_5"), default="resnet50", help="backbone (default: resnet50)")
    model.add_argument("--backbone-weights", type=_none_or_str, default="imagenet", help="imagenet, a local weights file, or none (default: imagenet)")
    model.add_argument("--layer4-pooling", choices=("global", "top_left"), default="global", help="pooling of layer 4 in the head (default: global)")
    model.add_argument("--no-standardize-labels", dest="standardize_labels", action="store_false", help="let the head learn raw label units (default: standardised, scaled back)")
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", help="run folder (default: runs/<dataset>-<timestamp>)")
    out.add_argument("--no-export", dest="export", action="store_false", help="skip the SavedModel export")
    out.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress output")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    import os

    if (args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")) == "jax":
        from keras_adtrs.training.loop_jax import main as jax_main

        return jax_main(argv)
    import keras_adtrs  # noqa: F401  (quiet TensorFlow start-up)
    from keras_adtrs.console import one_line_warnings

    one_line_warnings()
    from keras_adtrs.training.run import TrainConfig, run_repeated, run_training

    values = vars(args)
    values.pop("backend")
    quiet = values.pop("quiet")
    splits = values.pop("splits")
    if splits < 1:
        raise SystemExit(f"error: --splits must be at least 1, got {splits}")
    config = TrainConfig(**values, verbose=0 if quiet else 1)
    if splits > 1:
        run_repeated(config, splits)
    else:
        run_training(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
