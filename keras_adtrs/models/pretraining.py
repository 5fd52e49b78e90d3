"""Quality-aware pre-training of the ADTRS network without human scores (`keras.ops`: any backend).

`PretrainingModel` takes an `ADTRSBackbone`, puts the ADTRS scoring task on
it (`.adtrs`, whose score the ranking terms order) and adds a small
classifier on the pooled attention-block and layer-4 features. It trains on the batches of
`keras_adtrs.data.pretraining.DistortionBatches` (groups of one crop,
pristine and at graded levels of one distortion) with any mix of:

- `ranking`: within each group, a crop with less distortion must score
  higher than one with more, by a margin that grows with the level gap
  (the RankIQA idea, with the ADTRS score as the ranked quantity): the mean
  over ordered pairs of `max(0, margin * (level_j - level_i) - (s_i - s_j))`;
- `classification`: softmax cross-entropy of the distortion type and level
  (pristine is one class), as in DB-CNN's S-CNN;
- `fr`: L1 between the score and the full-reference colour SSIM, scaled
  to about unit spread (weak labels as in DeepFL-IQA / KADIS).

The objective string joins terms with `+` (`"ranking+classification"`).
Only the backbone (the ResNet stages and the attention block) is what later
training keeps: `python -m keras_adtrs.train --init-from` loads the backbone
(`keras_adtrs.models.weights.copy_backbone`), and fits the head and the
score scale to the new labels.
"""

import keras
from keras import ops

from keras_adtrs.models.adtrs import ADTRSModel
from keras_adtrs.models.backbone import ADTRSBackbone

OBJECTIVE_TERMS = ("ranking", "classification", "fr")
#: `fr` regresses `(colour SSIM - FR_CENTER) / FR_SCALE`.
FR_CENTER, FR_SCALE = 0.8, 0.15


def parse_objective(objective):
    """`"ranking+classification"` -> `("ranking", "classification")`, validated."""
    terms = tuple(t.strip() for t in str(objective).split("+") if t.strip())
    unknown = [t for t in terms if t not in OBJECTIVE_TERMS]
    if unknown or not terms or len(set(terms)) != len(terms):
        raise ValueError(
            f"pre-training objective {objective!r}: join distinct terms of {', '.join(OBJECTIVE_TERMS)} with '+'"
        )
    return terms


def ranking_loss(scores, levels, group_size, margin):
    """Mean hinge over the ordered pairs of each group (see the module docstring)."""
    s = ops.reshape(ops.cast(scores, "float32"), (-1, group_size))
    lv = ops.reshape(ops.cast(levels, "float32"), (-1, group_size))
    gap = lv[:, None, :] - lv[:, :, None]  # level_j - level_i: > 0 when crop i is better
    diff = s[:, :, None] - s[:, None, :]  # s_i - s_j
    pairs = ops.cast(gap > 0, "float32")
    hinge = ops.relu(margin * gap - diff) * pairs
    return ops.sum(hinge) / ops.maximum(ops.sum(pairs), 1.0)


@keras.saving.register_keras_serializable(package="keras_adtrs")
class PretrainingModel(keras.Model):
    """An ADTRS network with the pre-training objectives (see the module docstring).

    Called on crops `(B, c, c, 3)` in [0, 255] it returns `{"score": (B,),
    "logits": (B, num_classes)}`. `fit` takes batches `(crops, {"level",
    "class", "fr"})` whose crops come in groups of `group_size`.

    Args:
        backbone: an `ADTRSBackbone` (its `precision` is the network's
            compute precision: the score, the classifier and every loss term
            stay float32).
        num_classes: int. Classes of the type/level objective.
        group_size: int. Crops per group in a batch.
        objective: str. Terms joined by `+`. Defaults to
            `"ranking+classification"`.
        ranking_margin: float. Margin per level of difference. Defaults to `0.1`.
    """

    def __init__(self, backbone, num_classes, group_size, objective="ranking+classification",
                 ranking_margin=0.1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, ADTRSBackbone):
            raise TypeError(f"backbone must be an ADTRSBackbone, got {type(backbone).__name__}")
        self.num_classes = int(num_classes)
        self.group_size = int(group_size)
        self.objective = "+".join(parse_objective(objective))
        self.ranking_margin = float(ranking_margin)
        self.terms = parse_objective(objective)
        self.adtrs = ADTRSModel(backbone)
        self.classifier = keras.layers.Dense(self.num_classes, name="distortion_classifier", dtype="float32")
        self.classifier.build((None, 3840 + 2048))
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in self.terms}
        self.built = True

    def call(self, images, training=None):
        out = self.adtrs.network(images, training=training)
        pooled = ops.concatenate(
            [ops.mean(ops.cast(out["block_output"], "float32"), axis=(1, 2)),
             ops.mean(ops.cast(out["layer4"], "float32"), axis=(1, 2))],
            axis=-1,
        )
        return {"score": out["score"], "logits": self.classifier(pooled)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0.0
        for name in self.terms:
            if name == "ranking":
                value = ranking_loss(y_pred["score"], y["level"], self.group_size, self.ranking_margin)
            elif name == "classification":
                value = ops.mean(
                    keras.losses.sparse_categorical_crossentropy(y["class"], y_pred["logits"], from_logits=True)
                )
            else:
                target = (ops.cast(y["fr"], "float32") - FR_CENTER) / FR_SCALE
                value = ops.mean(ops.abs(ops.cast(y_pred["score"], "float32") - target))
            self.term_trackers[name].update_state(value)
            total = total + value
        return total

    @property
    def metrics(self):
        return [self._loss_tracker] + list(self.term_trackers.values())

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *args):
        if keras.backend.backend() == "tensorflow" and self.adtrs.fused_batchnorm:
            from keras_adtrs.models.fused_batchnorm_tensorflow import use_fused_batchnorm

            use_fused_batchnorm(self.adtrs.network)
        return super().train_step(*args)

    @property
    def backbone(self):
        """The `ADTRSBackbone` being pre-trained."""
        return self.adtrs.backbone

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "group_size": self.group_size,
            "objective": self.objective,
            "ranking_margin": self.ranking_margin,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone=backbone, **config)
