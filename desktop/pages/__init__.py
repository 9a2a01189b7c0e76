"""One package per page of the window: its page (``page.py``), its own widgets and its jobs.

A page reaches the shell only through ``desktop.context.AppContext`` (settings, the job runner,
the bus); widgets used by two or more pages live in ``desktop/widgets/``."""
