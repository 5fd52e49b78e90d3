"""An inference copy with its weights as graph constants against the same copy reading variables (prints a table).

`ADTRSModel.use_constant_weights` (TensorFlow) makes a folded inference copy
predict through a concrete function holding its weights as constants. This
script measures, per precision, in one process:

- `variables` and `constants`: `predict_on_batch` crops/s of two copies of the
  same model, one reading its variables and one with constant weights, timed
  in interleaved rounds (`--rounds`, `--calls` calls each), the median;
- `one-time cost`: what making the constant-weight function and its first
  call take, less the first call of the copy reading variables (each copy's
  first call includes TensorFlow's tracing and graph optimisation);
- `break-even`: the crops after which the constant weights have paid for
  themselves, `cost / (1/variables - 1/constants)`: the figure behind
  `keras_adtrs.defaults.CONSTANT_WEIGHTS_MIN_CROPS`;
- the largest score difference between the two copies.

The model has random weights with BatchNorm statistics and a score head set
far from their initial values (a fresh model's statistics fold into zero
biases, which TensorFlow then removes from a graph of constants, so it would
not stand for a trained one), or `--model`, a trained `.keras` file.

    python benchmarks/constant_weights.py [--crop-size 224] [--batch-size 8] [--rounds 5] [--calls 4]
        [--precisions float32 mixed_bfloat16] [--model M]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # a script in the checkout times the checkout's package

CHILD = "--child"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=4, help="calls per timed round")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--model", default=None, help="a trained .keras model instead of random weights")
    return parser


def trained_like(model, seed=0):
    """Sets BatchNorm statistics and the score head far from their initial values, as training would."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.network._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.1, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.1, channels))
    head = model.network.get_layer("score_dense")
    head.kernel.assign(rng.normal(0.0, 0.05, head.kernel.shape))


def child(args, precision):
    """Times both copies in this process; prints one JSON line."""
    from keras_adtrs.console import quiet_tensorflow

    quiet_tensorflow()
    import keras
    import numpy as np

    import keras_adtrs
    from keras_adtrs.models import with_precision
    from keras_adtrs.models.precision import check_precision

    check_precision(precision)
    keras.utils.set_random_seed(0)
    if args.model:
        model = keras_adtrs.load_model(args.model)
    else:
        model = keras_adtrs.build_adtrs(crop_size=args.crop_size, backbone_weights=None, score_scale=20.0,
                                        score_offset=50.0)
        trained_like(model)
    model = with_precision(model, precision)
    crop = model.crop_size
    crops = np.random.default_rng(1).uniform(0, 255, (args.batch_size, crop, crop, 3)).astype("float32")
    variables, constants = keras_adtrs.fold_batchnorm(model), keras_adtrs.fold_batchnorm(model)
    started = time.perf_counter()
    expected = variables.predict_on_batch(crops)
    first_variables = time.perf_counter() - started
    started = time.perf_counter()
    if not constants.use_constant_weights():
        raise SystemExit("constant weights do not apply here (TensorFlow backend needed)")
    scores = constants.predict_on_batch(crops)
    first_constants = time.perf_counter() - started
    rates = {"variables": [], "constants": []}
    for _ in range(args.rounds):
        for name, copy in (("variables", variables), ("constants", constants)):
            started = time.perf_counter()
            for _ in range(args.calls):
                copy.predict_on_batch(crops)
            rates[name].append(args.calls * len(crops) / (time.perf_counter() - started))
    print(json.dumps({"precision": precision, "rates": rates, "first_variables": first_variables,
                      "first_constants": first_constants,
                      "max_difference": float(np.max(np.abs(scores - expected))),
                      "score_spread": float(np.std(expected))}))


def precision_children(script, precisions, argv):
    """Runs `script --child PRECISION *argv` per precision; the JSON each printed last, in order.

    A child that fails prints `PRECISION: skipped (its last line)` and gives no result.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results = []
    for precision in precisions:
        result = subprocess.run([sys.executable, os.path.abspath(script), CHILD, precision, *argv],
                                capture_output=True, text=True, env=env)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            print(f"{precision}: skipped ({lines[-1] if lines else 'exit ' + str(result.returncode)})")
            continue
        results.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == CHILD:
        args = build_parser().parse_args(argv[2:])
        child(args, argv[1])
        return 0
    args = build_parser().parse_args(argv)
    rows = precision_children(__file__, args.precisions, argv)
    print(f"crop {args.crop_size}, batch {args.batch_size}, {args.rounds} rounds of {args.calls} calls, "
          f"{'model ' + args.model if args.model else 'random weights, trained-like statistics'}")
    print("| precision | variables crops/s | constants crops/s | x variables | one-time cost (s) | break-even (crops) "
          "| largest score difference |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        plain, constant = statistics.median(row["rates"]["variables"]), statistics.median(row["rates"]["constants"])
        cost = row["first_constants"] - row["first_variables"]
        gain = 1 / plain - 1 / constant
        even = f"{cost / gain:.0f}" if gain > 0 else "never"
        print(f"| {row['precision']} | {plain:.2f} | {constant:.2f} | {constant / plain:.2f}x | {cost:.1f} | {even} "
              f"| {row['max_difference']:.3g} (spread {row['score_spread']:.3g}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
