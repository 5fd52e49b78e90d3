"""`IQASource`: what every data set looks like to training and evaluation.

An `IQASource` lists a set's images (encoded bytes or file paths), their
human scores, the unit a split must keep together (the reference image for
synthetic sets, the image itself for authentic ones), and the example keys
(file names). `keras_adtrs.data.registry.load_source(name, ...)` returns one
for any known set.
"""

import dataclasses
from typing import Any, Dict, List, Tuple

import numpy as np


@dataclasses.dataclass
class IQASource:
    """One data set, as lists aligned by index.

    Attributes:
        name: str. Data set name.
        images: list of `bytes` (encoded image) or `str` (file path).
        scores: float32 array `(N,)`, the set's own MOS/DMOS units.
        groups: array `(N,)`. Split unit: images of one group never straddle
            train and test (reference id for synthetic sets, image index for
            authentic ones).
        names: list of str. Example keys (file names), unique.
        higher_is_better: bool. False for DMOS sets.
        score_range: `(low, high)` of the scale.
        metadata: dict. Anything else (distortion, level, score_std...).
    """

    name: str
    images: List[Any]
    scores: np.ndarray
    groups: np.ndarray
    names: List[str]
    higher_is_better: bool = True
    score_range: Tuple[float, float] = (0.0, 100.0)
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.groups = np.asarray(self.groups).reshape(-1)
        n = len(self.images)
        for field in ("scores", "groups", "names"):
            if len(getattr(self, field)) != n:
                raise ValueError(
                    f"data set {self.name!r}: {field} has {len(getattr(self, field))} entries "
                    f"but there are {n} images"
                )
        bad = np.flatnonzero(~np.isfinite(self.scores))
        if bad.size:
            shown = ", ".join(f"{self.names[i]} ({self.scores[i]})" for i in bad[:5])
            raise ValueError(
                f"data set {self.name!r}: {bad.size} score(s) are NaN or infinite: {shown}"
            )

    def __len__(self):
        return len(self.images)

    def subset(self, indices):
        """A new source holding the given indices."""
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=[self.images[i] for i in indices],
            scores=self.scores[indices],
            groups=self.groups[indices],
            names=[self.names[i] for i in indices],
            metadata={
                k: (np.asarray(v)[indices] if isinstance(v, (list, np.ndarray)) and len(v) == len(self) else v)
                for k, v in self.metadata.items()
            },
        )
