"""Inference: scoring whole images (crop grids) and evaluating a model on a data set."""
