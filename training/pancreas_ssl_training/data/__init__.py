"""Dataset readers, synthetic lesions and MONAI datasets for training."""
