"""Settings: hosts, stores, the embedder and its speed mode, and chat defaults."""
