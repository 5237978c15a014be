"""The prepared layout -> tensors: datasets, training augmentation, evaluation loading."""
