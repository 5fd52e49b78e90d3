"""Callbacks: per-epoch validation SRCC/PLCC on whole images (crop-grid averages), the objective warm-up."""

import warnings

import keras
import numpy as np

from keras_adtrs import metrics as iqa_metrics
from keras_adtrs.data.images import load_image
from keras_adtrs.inference.scoring import image_crops


class ValidationMetrics(keras.callbacks.Callback):
    """Scores the validation images at each epoch end and logs `val_srcc`, `val_plcc`.

    Images are scored like `keras_adtrs.score` (deterministic crop grid,
    mean per image). Put it before callbacks that read these logs
    (`ModelCheckpoint(monitor="val_srcc")`, `CSVLogger`). An undefined
    correlation (constant predictions, early in training) is logged as `-1`,
    so that "best so far" comparisons keep working.

    Args:
        images: list of images (arrays, bytes or paths).
        scores: array of their human scores.
        crops: int. Crops per image. Defaults to `9`.
        batch_size: int. Defaults to `64`.
        direct_call: bool. Score by calling the model (`model(x, training=False)`)
            instead of `predict_on_batch`, as the multi-worker loop needs.
            Defaults to `False`.
    """

    def __init__(self, images, scores, crops=9, batch_size=64, direct_call=False):
        super().__init__()
        self.images = images
        self.scores = np.asarray(scores, np.float32)
        self.crops = crops
        self.batch_size = batch_size
        self._crops_cache = None
        self.direct_call = direct_call

    def _predict(self, batch):
        if self.direct_call:
            return self.model(batch, training=False)
        return self.model.predict_on_batch(batch)

    def _all_crops(self):
        if self._crops_cache is None:
            self._crops_cache = np.stack(
                [image_crops(load_image(im, i), self.model.crop_size, self.crops) for i, im in enumerate(self.images)]
            )
        return self._crops_cache

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self.images) == 0:
            return
        crops = self._all_crops()
        flat = crops.reshape((-1,) + crops.shape[2:])
        out = np.concatenate(
            [np.asarray(self._predict(flat[i : i + self.batch_size])).reshape(-1) for i in range(0, len(flat), self.batch_size)]
        )
        predictions = out.reshape(len(self.images), self.crops).astype(np.float64).mean(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", iqa_metrics.UndefinedMetricWarning)
            srcc = iqa_metrics.srcc(predictions, self.scores)
            plcc = iqa_metrics.plcc(predictions, self.scores)
        logs["val_srcc"] = -1.0 if np.isnan(srcc) else srcc
        logs["val_plcc"] = -1.0 if np.isnan(plcc) else plcc


class ObjectiveWarmup(keras.callbacks.Callback):
    """Trains the first `epochs` epochs on the quality terms only.

    From random backbone weights the full objective hardly trains at first
    (the runs that showed it are in docs/benchmarks.md): each batch's extreme
    crops get a gradient of about 0.55 from the ranking terms against 1/B
    from the quality term, and the position-by-position consistency term
    pulls the random layer-4 maps towards mirror symmetry, before the network
    can tell images apart. This callback sets
    the ranking, ranking-consistency and consistency weights to 0 (through
    `model.loss_weight_overrides`, which is not saved) for the first
    `epochs` epochs, then restores the model's own weights and retraces the
    train function. The saved model's config always holds the full objective.

    Args:
        epochs: int. Warm-up epochs. `0` does nothing.
    """

    WARMUP_WEIGHTS = {"ranking": 0.0, "ranking_consistency": 0.0, "consistency": 0.0}

    def __init__(self, epochs):
        super().__init__()
        self.epochs = int(epochs)

    def _set(self, warm):
        overrides = dict(self.WARMUP_WEIGHTS) if warm else {}
        if overrides != self.model.loss_weight_overrides:
            self.model.loss_weight_overrides = overrides
            self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._set(epoch < self.epochs)

    def on_train_end(self, logs=None):
        self._set(False)
