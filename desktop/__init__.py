"""The Qt face of Corral. The shell lives here (app, context, jobs, status, style, layout,
launcher, gc_guard); each page is a package under ``pages/``; widgets two pages share are in
``widgets/``. Business rules stay in ``core``."""
