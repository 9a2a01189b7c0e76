"""Model management: Ollama server and store, GGUF files, the llama.cpp engine child."""
