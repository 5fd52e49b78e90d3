"""Data: the embedded default set, splits, image decoding, crops and tf.data pipelines."""
