"""Numbers for people: byte sizes in the units file managers use."""

from __future__ import annotations


def human_size(n: int | None, *, empty: str = "-") -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000); ``empty`` for 0 or unknown."""
    if not n:
        return empty
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
