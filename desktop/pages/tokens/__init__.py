"""Tokens: how several tokenizers split the same text, side by side, and BPE step by step."""
