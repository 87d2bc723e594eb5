"""Decoding for sequence models: greedy and beam search."""
