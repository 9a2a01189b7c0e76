"""Widgets shared by two or more pages (verdict badges and code findings, the embedder choice)."""
