"""The JAX engine of a training run, without TensorFlow.

One device; the training crops come from the numpy pipeline
(`keras_adtrs.data.pipeline_numpy.TrainingCrops`: Pillow decoding, numpy
generators seeded by `(seed, epoch, image, crop)`, so a resumed run sees the
batches an uninterrupted one would); the step is always compiled with XLA.
The driver is `keras_adtrs.training.run.run_training`: resume, checkpoints,
validation and the run folder are the same as on TensorFlow.

Differences from the TensorFlow engine, by necessity:

- training crops come from numpy generators, not TensorFlow's stateless RNG
  (same rules, other draws); images are decoded with Pillow and cropped in
  numpy (JPEG pixels may differ from TensorFlow's by a few levels);
- data sets: those readable without TensorFlow (`default`, `live_challenge`,
  `csv`, and any registered with `register_source`);
- `strategy` must be `auto` or `none` (one device); `jit_compile` is always
  on, and recorded so;
- no TensorBoard logs (the callback needs TensorFlow).
"""

import dataclasses

from keras_adtrs.data.pipeline_numpy import TrainingCrops
from keras_adtrs.errors import SettingError
from keras_adtrs.training.engine import Engine


class JaxEngine(Engine):
    """The JAX backend's share of a training run."""

    name = "jax"

    def check(self, config):
        if config.strategy not in ("auto", "none"):
            raise SettingError("strategy", f"{config.strategy!r} is a tf.distribute strategy: the JAX backend trains "
                               "on one device (auto or none)")

    def settings(self, config):
        # The JAX step is always jit-compiled: record what runs.
        return dataclasses.replace(config, jit_compile=True)

    def record(self):
        return {"backend": self.name,
                "pipeline": "numpy (keras_adtrs.data.pipeline_numpy): PIL decoding, numpy RNG crops"}

    def compile_options(self, config):
        return {"jit_compile": True}

    def batches(self, train_src, config, steps, global_step):
        epoch, step = divmod(int(global_step), steps)
        return TrainingCrops(
            train_src.images,
            train_src.scores,
            config.crop_size,
            crops_per_image=config.crops_per_image,
            batch_size=config.batch_size,
            seed=config.seed,
            epochs=config.epochs,
            initial_epoch=epoch,
            initial_step=step,
            steps_per_epoch=steps,
        )
