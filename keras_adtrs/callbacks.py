"""Callbacks: per-epoch validation SRCC/PLCC on whole images (crop-grid averages)."""

import keras
import numpy as np

from keras_adtrs import metrics as iqa_metrics


class ValidationMetrics(keras.callbacks.Callback):
    """Scores the validation images at each epoch end and logs `val_srcc`, `val_plcc`.

    Images are scored like `keras_adtrs.score` (deterministic crop grid,
    mean per image). Put it before callbacks that read these logs
    (`ModelCheckpoint(monitor="val_srcc")`, `CSVLogger`).

    Args:
        images: list of images (arrays, bytes or paths).
        scores: array of their human scores.
        crops: int. Crops per image. Defaults to `9`.
        batch_size: int. Defaults to `64`.
    """

    def __init__(self, images, scores, crops=9, batch_size=64):
        super().__init__()
        self.images = images
        self.scores = np.asarray(scores, np.float32)
        self.crops = crops
        self.batch_size = batch_size
        self._crops_cache = None

    def _all_crops(self):
        if self._crops_cache is None:
            from keras_adtrs.scoring import image_crops, load_image

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
            [np.asarray(self.model.predict_on_batch(flat[i : i + self.batch_size])).reshape(-1) for i in range(0, len(flat), self.batch_size)]
        )
        predictions = out.reshape(len(self.images), self.crops).astype(np.float64).mean(axis=1)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", iqa_metrics.UndefinedMetricWarning)
            srcc = iqa_metrics.srcc(predictions, self.scores)
            plcc = iqa_metrics.plcc(predictions, self.scores)
        logs["val_srcc"] = -1.0 if np.isnan(srcc) else srcc
        logs["val_plcc"] = -1.0 if np.isnan(plcc) else plcc
