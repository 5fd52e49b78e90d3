"""The `live_iqa` TFDS builder (see `live_iqa_dataset_builder.Builder`)."""
