"""Llama Guard checks, verdict parsing, per-category policy, and the insecure-code scan."""
