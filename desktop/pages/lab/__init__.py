"""The Lab page: from one-hot to sentence embeddings, on the user's own text."""
