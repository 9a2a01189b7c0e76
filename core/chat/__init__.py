"""Conversations, streaming generation through the backends, and the history store."""
