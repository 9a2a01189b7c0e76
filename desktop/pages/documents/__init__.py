"""Documents: knowledge bases, their files, indexing runs with progress, and a search preview."""
