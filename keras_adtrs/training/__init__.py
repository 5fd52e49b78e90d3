"""Training runs: configuration, the run folder, the TensorFlow and JAX loops, resume, the protocol."""
