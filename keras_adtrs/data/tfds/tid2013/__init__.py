"""The `tid2013` TFDS builder (see `tid2013_dataset_builder.Builder`)."""
