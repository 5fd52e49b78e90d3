"""The `live_challenge` TFDS builder (see `live_challenge_dataset_builder.Builder`)."""
