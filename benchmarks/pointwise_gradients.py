"""1x1 convolutions' gradients as matrix products against TensorFlow's own gradient (prints two tables).

`keras_adtrs.models.pointwise_conv_tensorflow` makes the TensorFlow training
step compute the weight gradient of each 1x1 stride-1 convolution as `X^T dY`
instead of with `Conv2DBackpropFilter`. This script measures, per precision,
each in its own process:

- per ResNet50 shape (`--shapes`), the weight gradient alone: the
  `Conv2DBackpropFilter` op against the product, milliseconds and GFLOP/s;
- the ADTRS training step (`train_on_batch`, Adam) of two models with the
  same weights, one with `matmul_pointwise_gradients` on and one off, timed
  in interleaved rounds (`--rounds`, `--steps` steps each), the median.

    python benchmarks/pointwise_gradients.py [--crop-size 224] [--batch-size 8] [--rounds 3] [--steps 3]
        [--precisions float32 mixed_bfloat16] [--no-shapes]
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # a script in the checkout times the checkout's package

from constant_weights import CHILD, precision_children  # noqa: E402  (benchmarks/ is not a package)

#: ResNet50's 1x1 stride-1 convolution shapes at crop 224: (map side, in, out, how many).
SHAPES_224 = ((56, 64, 256, 4), (56, 256, 64, 2), (28, 128, 512, 4), (28, 512, 128, 3), (14, 256, 1024, 6),
              (14, 1024, 256, 5), (7, 512, 2048, 3), (7, 2048, 512, 2))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--no-shapes", action="store_true", help="skip the per-shape table")
    return parser


def _median_ms(function, rounds, calls=4):
    function()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            result = function()
        result.numpy()
        times.append((time.perf_counter() - started) / calls * 1000)
    return statistics.median(times)


def shape_rows(args, precision):
    """The weight gradient of each shape, both ways (the batch holds the step's two forward passes)."""
    import numpy as np
    import tensorflow as tf

    dtype = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32
    batch = 2 * args.batch_size  # the objective's two forward passes (crops and their flips)
    scale = args.crop_size / 224
    rows = []
    rng = np.random.default_rng(0)
    for side, channels_in, channels_out, count in SHAPES_224:
        side = max(1, round(side * scale))
        x = tf.constant(rng.normal(size=(batch, side, side, channels_in)), dtype)
        dy = tf.constant(rng.normal(size=(batch, side, side, channels_out)), dtype)
        conv = tf.function(lambda x=x, dy=dy, i=channels_in, o=channels_out: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[1, 1, i, o], out_backprop=dy, strides=[1, 1, 1, 1], padding="VALID"))
        product = tf.function(lambda x=x, dy=dy, i=channels_in, o=channels_out: tf.linalg.matmul(
            tf.reshape(x, (-1, i)), tf.reshape(dy, (-1, o)), transpose_a=True))
        difference = np.max(np.abs(tf.cast(tf.reshape(conv(), (channels_in, channels_out)) - product(), tf.float32)))
        gflop = 2 * batch * side * side * channels_in * channels_out / 1e9
        conv_ms, product_ms = _median_ms(conv, args.rounds), _median_ms(product, args.rounds)
        rows.append({"shape": f"{side}x{side}x{channels_in}->{channels_out}", "count": count, "conv_ms": conv_ms,
                     "product_ms": product_ms, "conv_gflops": gflop / conv_ms * 1000,
                     "product_gflops": gflop / product_ms * 1000,
                     "relative_difference": float(difference / np.max(np.abs(product().numpy().astype("float32"))))})
    return rows


def step_rates(args, precision):
    """crops/s of the training step with the products and without, interleaved."""
    import keras
    import numpy as np

    import keras_adtrs

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 255, (args.batch_size, args.crop_size, args.crop_size, 3))
    x = x.astype("float32")
    y = np.linspace(20, 80, args.batch_size).astype("float32")
    first = keras_adtrs.build_adtrs(crop_size=args.crop_size, backbone_weights=None, score_scale=20.0,
                                    score_offset=50.0, precision=precision)
    models = {}
    for name, on in (("products", True), ("own", False)):
        model = first if on else keras_adtrs.ADTRSModel.from_config(first.get_config())
        model.set_weights(first.get_weights())
        model.matmul_pointwise_gradients = on
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        model.train_on_batch(x, y)  # traced here, with the switch as set
        models[name] = model
    rates = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - started))
    return rates


def child(args, precision):
    from keras_adtrs.console import quiet_tensorflow

    quiet_tensorflow()
    from keras_adtrs.models.precision import check_precision

    check_precision(precision)
    shapes = [] if args.no_shapes else shape_rows(args, precision)
    print(json.dumps({"precision": precision, "shapes": shapes, "rates": step_rates(args, precision)}))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == CHILD:
        child(build_parser().parse_args(argv[2:]), argv[1])
        return 0
    args = build_parser().parse_args(argv)
    results = precision_children(__file__, args.precisions, argv)
    print(f"crop {args.crop_size}, batch {args.batch_size}, {args.rounds} rounds")
    if not args.no_shapes:
        print("| precision | 1x1 shape | in ResNet50 | Conv2DBackpropFilter ms | product ms | x | "
              "GFLOP/s (filter, product) | largest relative difference |")
        print("|---|---|---|---|---|---|---|---|")
        for result in results:
            for row in result["shapes"]:
                print(f"| {result['precision']} | {row['shape']} | {row['count']} | {row['conv_ms']:.2f} | "
                      f"{row['product_ms']:.2f} | {row['conv_ms'] / row['product_ms']:.2f}x | "
                      f"{row['conv_gflops']:.0f}, {row['product_gflops']:.0f} | {row['relative_difference']:.1e} |")
    print("| precision | training step, own gradient (crops/s) | with products (crops/s) | x own |")
    print("|---|---|---|---|")
    for result in results:
        own, products = statistics.median(result["rates"]["own"]), statistics.median(result["rates"]["products"])
        print(f"| {result['precision']} | {own:.2f} | {products:.2f} | {products / own:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
