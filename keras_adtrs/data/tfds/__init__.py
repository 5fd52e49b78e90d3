"""Public IQA data sets as TensorFlow Datasets builders (TensorFlow-only package).

Importing this package registers the TFDS builders `live_iqa`, `csiq`,
`tid2013`, `kadid10k`, `live_challenge` and `koniq10k` with TFDS (manual
download: each builder's `MANUAL_DOWNLOAD_INSTRUCTIONS` names the files; its
folder holds a README.md, CITATIONS.bib and the `dummy_data/` the tests build
from). `keras_adtrs.data.registry.load_source` loads them as `IQASource`s
(`sources.load_tfds_source`), recording which release each prepared set was
built from.

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

# Importing a builder module registers the builder with TFDS.
from keras_adtrs.data.tfds.csiq import csiq_dataset_builder  # noqa: F401
from keras_adtrs.data.tfds.kadid10k import kadid10k_dataset_builder  # noqa: F401
from keras_adtrs.data.tfds.koniq10k import koniq10k_dataset_builder  # noqa: F401
from keras_adtrs.data.tfds.live_challenge import live_challenge_dataset_builder  # noqa: F401
from keras_adtrs.data.tfds.live_iqa import live_iqa_dataset_builder  # noqa: F401
from keras_adtrs.data.tfds.tid2013 import tid2013_dataset_builder  # noqa: F401

BUILDERS = ("live_iqa", "csiq", "tid2013", "kadid10k", "live_challenge", "koniq10k")
