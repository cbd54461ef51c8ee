"""latentdiff: train and run latent diffusion models on your own images, end to end."""

__version__ = "0.1.0"
