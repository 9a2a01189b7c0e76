"""The embedding lab: word2vec and GloVe on the user's own text, co-occurrence counts,
stemming vs lemmatization, mean pooling step by step, and a small embedding-layer classifier."""
