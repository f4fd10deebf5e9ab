"""The self-supervised and auxiliary training methods; each is one module with one Method class."""
