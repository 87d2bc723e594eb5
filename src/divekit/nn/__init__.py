"""Building blocks written from scratch, each tested against the PyTorch built-in it mirrors."""
