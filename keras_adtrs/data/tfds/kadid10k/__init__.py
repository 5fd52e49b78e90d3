"""The `kadid10k` TFDS builder (see `kadid10k_dataset_builder.Builder`)."""
