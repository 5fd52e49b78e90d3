"""Public IQA data sets as TFDS builders, and `IQASource` loaders.

Importing this package registers

- the TFDS builders `live_iqa`, `csiq`, `tid2013`, `kadid10k`,
  `live_challenge` and `koniq10k` (manual download: each builder's
  `MANUAL_DOWNLOAD_INSTRUCTIONS` names the files),
- `keras_adtrs.data.source` loaders of the same names, plus `csv` for your
  own data (see `keras_adtrs.data.csv_source`).

Example:

```python
import tensorflow_datasets as tfds
import keras_adtrs.data.tfds  # registers the builders

builder = tfds.builder("live_challenge", data_dir="~/tensorflow_datasets")
builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir="/data/ChallengeDB_release")
)
ds = builder.as_dataset(split="train")  # {"image", "score", "score_std", "file_name"}
```
"""

from keras_adtrs.data.tfds.csiq import csiq_dataset_builder as csiq  # noqa: F401
from keras_adtrs.data.tfds.kadid10k import kadid10k_dataset_builder as kadid10k  # noqa: F401
from keras_adtrs.data.tfds.koniq10k import koniq10k_dataset_builder as koniq10k  # noqa: F401
from keras_adtrs.data.tfds.live_challenge import live_challenge_dataset_builder as live_challenge  # noqa: F401
from keras_adtrs.data.tfds.live_iqa import live_iqa_dataset_builder as live_iqa  # noqa: F401
from keras_adtrs.data.tfds.tid2013 import tid2013_dataset_builder as tid2013  # noqa: F401
from keras_adtrs.data import csv_source  # noqa: F401, E402
from keras_adtrs.data.tfds import sources  # noqa: F401, E402
from keras_adtrs.data.csv_source import load_csv_source  # noqa: F401, E402
from keras_adtrs.data.tfds.sources import load_tfds_source, official_split, prepare_builder  # noqa: F401, E402

BUILDERS = ("live_iqa", "csiq", "tid2013", "kadid10k", "live_challenge", "koniq10k")
