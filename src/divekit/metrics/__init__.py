"""Metrics: accuracy and confusion matrices, perplexity, BLEU."""
