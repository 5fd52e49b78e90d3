"""Inference: scoring whole images (crop grids), quality maps, LiteRT/ONNX artifacts as models, evaluation."""
