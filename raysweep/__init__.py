"""raysweep: distributed hyperparameter sweeps of VAE training on Ray Tune, tracked in MLflow."""

__version__ = "0.1.0"
