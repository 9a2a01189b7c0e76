"""The Qt face of Corral: windows, pages, widgets, workers."""
