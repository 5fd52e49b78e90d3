"""The ADTRS model: registered layers, backbones, the objective, training steps, folding, conversion."""
