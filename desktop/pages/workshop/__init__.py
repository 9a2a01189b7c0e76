"""The Workshop page: quantize, measure, the 1-bit view, and merge."""
