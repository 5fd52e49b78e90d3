"""The `csiq` TFDS builder (see `csiq_dataset_builder.Builder`)."""
