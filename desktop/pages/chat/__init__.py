"""Chat: the page, its transcript view, controls, history list, sources panel, the guard that
runs inside a turn, and the jobs that open a model and run a turn."""
