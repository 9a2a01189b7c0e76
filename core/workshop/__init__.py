"""The model workshop: quantize, merge and measure GGUF models (no Qt)."""
