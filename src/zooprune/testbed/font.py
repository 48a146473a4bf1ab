"""A hand-made 5x7 bitmap font, so rendered text never depends on system fonts.

Each glyph is 7 rows of 5 characters; ``#`` marks an ink pixel.
"""

from __future__ import annotations

import numpy as np

_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
}

GLYPH_CHARS: tuple[str, ...] = tuple(_GLYPHS)


def glyph_mask(char: str, scale: int = 2) -> np.ndarray:
    """Boolean ink mask of one character, shape [7 * scale, 5 * scale]."""
    rows = _GLYPHS[char]
    base = np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    return np.kron(base, np.ones((scale, scale), dtype=bool))


def text_mask(text: str, scale: int = 2, spacing: int = 1) -> np.ndarray:
    """Boolean ink mask of a string, shape [7 * scale, len * (5 + spacing) * scale - spacing * scale]."""
    parts: list[np.ndarray] = []
    gap = np.zeros((7 * scale, spacing * scale), dtype=bool)
    for i, ch in enumerate(text):
        if i:
            parts.append(gap)
        parts.append(glyph_mask(ch, scale))
    return np.concatenate(parts, axis=1)
