"""Callbacks: per-epoch SRCC/PLCC of a part of the data on whole images (crop-grid averages), the objective warm-up."""

import warnings

import keras
import numpy as np

from keras_adtrs import metrics as iqa_metrics
from keras_adtrs.data.image_crops import image_crops
from keras_adtrs.data.images import load_image
from keras_adtrs.defaults import SCORE_BATCH_SIZE, TEST_CROPS
from keras_adtrs.models.scoring import score_crop_sets


class ValidationMetrics(keras.callbacks.Callback):
    """Scores a part of the data set (the validation part by default) at each epoch end and logs `<prefix>_srcc`, `<prefix>_plcc`.

    Images are scored like `keras_adtrs.score` (deterministic crop grid,
    mean per image, the package's one scoring loop), their crops decoded and
    cut once. Put it before callbacks that read these logs
    (`ModelCheckpoint(monitor="val_srcc")`, `CSVLogger`). An undefined
    correlation (constant predictions, early in training) is logged as `-1`,
    so that "best so far" comparisons keep working. `predictions` keeps each
    epoch's scores (`{epoch: array}`).

    Args:
        images: list of images (arrays, bytes or paths).
        scores: array of their human scores.
        crops: int. Crops per image. Defaults to `keras_adtrs.defaults.TEST_CROPS`.
        batch_size: int. Crops per forward call. Defaults to
            `keras_adtrs.defaults.SCORE_BATCH_SIZE`.
        direct_call: bool. Score by calling the model (`model(x, training=False)`)
            instead of `predict_on_batch`, as the multi-worker loop needs.
            Defaults to `False`.
        prefix: str. Log name prefix. Defaults to `"val"` (the validation part).
    """

    def __init__(self, images, scores, crops=TEST_CROPS, batch_size=SCORE_BATCH_SIZE, direct_call=False, prefix="val"):
        super().__init__()
        self.images = images
        self.scores = np.asarray(scores, np.float32)
        self.crops = crops
        self.batch_size = batch_size
        self.direct_call = direct_call
        self.prefix = prefix
        self.predictions = {}
        self._crops_cache = None

    def _all_crops(self):
        if self._crops_cache is None:
            self._crops_cache = [
                image_crops(load_image(im, i), self.model.crop_size, self.crops) for i, im in enumerate(self.images)
            ]
        return self._crops_cache

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self.images) == 0:
            return
        predict = (lambda batch: self.model(batch, training=False)) if self.direct_call else None
        predictions = score_crop_sets(self.model, self._all_crops(), self.batch_size, predict)
        self.predictions[int(epoch)] = predictions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", iqa_metrics.UndefinedMetricWarning)
            srcc = iqa_metrics.srcc(predictions, self.scores)
            plcc = iqa_metrics.plcc(predictions, self.scores)
        logs[f"{self.prefix}_srcc"] = -1.0 if np.isnan(srcc) else srcc
        logs[f"{self.prefix}_plcc"] = -1.0 if np.isnan(plcc) else plcc


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
