"""Datasets: a verified file store, Fashion-MNIST, The Time Machine and the English-French pairs."""
