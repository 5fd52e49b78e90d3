"""Data: sources, the registry, image decoding, crops, splits and the input pipelines.

- `registry.load_source(name, ...)`: any known data set as a `source.IQASource`
  (`synthetic`: the embedded default set; `csv_source`: your own;
  `live_challenge`: the LIVE-C release; `tfds/`: the TFDS builders);
- `images`: the one place that decodes images; `crops` / `crops_tensorflow`:
  the crop rules in numpy and TensorFlow; `splits`: seeded splits by group;
- `pipeline_tensorflow` (tf.data) and `pipeline_numpy` (`keras.utils.PyDataset`,
  no TensorFlow): the training batches.

This package imports nothing from the rest of keras_adtrs but the base modules.
"""
