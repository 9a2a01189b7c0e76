"""Models: every model in one table, its detail panel, pull, import and delete."""
