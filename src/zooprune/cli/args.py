"""Argument helpers shared by the subcommands (kept out of ``common.py``: no model loading here)."""

from __future__ import annotations


def parse_list(text: str, option: str = "list") -> list[str]:
    """``"zoo, divprune,"`` -> ``["zoo", "divprune"]``; an empty list is an error naming ``option``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} is empty: {text!r}")
    return items
