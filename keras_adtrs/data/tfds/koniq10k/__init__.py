"""The `koniq10k` TFDS builder (see `koniq10k_dataset_builder.Builder`)."""
