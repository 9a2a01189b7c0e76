"""Documents: loaders -> chunker -> embedder -> Chroma store -> retriever; indexing jobs."""
