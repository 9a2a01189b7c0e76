"""Embeddings: similarity matrices of sentences and a 2-D map of a knowledge base."""
