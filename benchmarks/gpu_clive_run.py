"""Device run: train ADTRS from scratch on LIVE-C under JAX (no TensorFlow), report timing and SRCC/PLCC.

Called by benchmarks/gpu_clive_run.sh. `--smoke` shrinks everything for a CPU check.
Writes <out>/metrics.json (wall time, crops/s, test SRCC/PLCC) plus the run folder.
"""

import argparse
import json
import os
import sys
import time


def _time_guard(seconds):
    """Stops training after the epoch in which `seconds` of training have passed."""
    import keras

    class TimeGuard(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.time()
            self.stopped_after_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            if time.time() - self.start > seconds:
                self.stopped_after_epoch = epoch + 1
                self.model.stop_training = True
                print(f"time guard: stopping after epoch {epoch + 1} ({time.time() - self.start:.0f} s > {seconds:.0f} s)")

    return TimeGuard()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--manual-dir", default="../shared/data/clive_dev")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_clive_out"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crops-per-image", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--warmup-epochs", type=int, default=8, help="quality terms only for the first N epochs")
    parser.add_argument(
        "--max-train-seconds", type=float, default=240,
        help="stop after the epoch that passes this many seconds of training (keeps the run inside the lease)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU check: crop 64, batch 4, 2x2 steps")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if args.smoke:
        args.crop_size, args.batch_size, args.epochs, args.steps_per_epoch, args.crops_per_image = 64, 4, 2, 2, 1
        args.warmup_epochs = 1
    started = time.time()
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("set KERAS_BACKEND=jax")
    from keras_adtrs.training.config import TrainConfig
    from keras_adtrs.training.loop_jax import run_training_jax

    config = TrainConfig(
        dataset="live_challenge",
        manual_dir=args.manual_dir,
        crop_size=args.crop_size,
        crops_per_image=args.crops_per_image,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        learning_rate=args.learning_rate,
        warmup_epochs=args.warmup_epochs,
        backbone_weights=None,  # from scratch: no network, ImageNet weights exceed the transfer limit
        test_fraction=0.2,
        validation_fraction=0.1,
        test_crops=2 if args.smoke else 9,
        seed=args.seed,
        output_dir=os.path.join(args.out, "run"),
        verbose=1,
    )
    results = run_training_jax(config, extra_callbacks=[_time_guard(args.max_train_seconds)])
    import jax

    summary = {
        "device": [str(d) for d in jax.devices()],
        "wall_seconds_total": round(time.time() - started, 1),
        "train_seconds": results["train_seconds"],
        "first_step_seconds": results["first_step_seconds"],
        "epoch_seconds": results["epoch_seconds"],
        "train_crops_per_second": results["train_crops_per_second"],
        "train_crops_per_second_after_first_epoch": results["train_crops_per_second_after_first_epoch"],
        "test_srcc": results["test"].get("srcc"),
        "test_plcc": results["test"].get("plcc"),
        "best_epoch": results["best_epoch"],
        "epochs_run": results["epochs_run"],
        "test": results["test"],
        "history_csv": "run/history.csv",
        "settings": vars(args),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as handle:
        json.dump(summary, handle, indent=2, default=str)
    print(json.dumps(summary, indent=2, default=str))
    # model.keras (~100 MB) is too big to bring back; keep only small files.
    model = os.path.join(args.out, "run", "model.keras")
    if not args.smoke and os.path.exists(model) and os.environ.get("KEEP_MODEL") != "1":
        os.remove(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
