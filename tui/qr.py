"""A QR code drawn with text, for an invite a desktop peer scans off the terminal.

Two rows of modules per line of text with half blocks (`▀ ▄ █`), so a version-7 code (45
modules, an invite token of ~150 bytes) takes 24 lines with its quiet zone. The lines are drawn
black on white whatever the theme (tui/screens/invite.py styles them so): phones read dark
modules on a light ground, and an inverted code on a dark terminal often fails to scan.
segno is pure Python (no Pillow), so a Raspberry Pi installs it as it is.
"""

from __future__ import annotations

from typing import Final

import segno

#: Modules of white around the code. The standard asks for 4; scanners read 2 well, and every
#: line saved matters at 24 rows.
QUIET: Final = 2
_HALVES: Final = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_lines(text: str, *, quiet: int = QUIET) -> list[str]:
    """`text` as a QR code (error correction L, the smallest version that holds it), one string
    per line of half blocks, where a block is a dark module.

    Raises:
        segno.DataOverflowError: `text` is too long for any QR code.
    """
    code = segno.make(text, error="l", micro=False, boost_error=False)
    rows = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=quiet)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    return [
        "".join(_HALVES[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(rows[::2], rows[1::2], strict=True)
    ]


def qr_matrix(lines: list[str]) -> list[list[bool]]:
    """The modules back from `qr_lines`' output (for the tests: a scanner's view of it)."""
    out: list[list[bool]] = []
    for line in lines:
        out.append([c in "▀█" for c in line])
        out.append([c in "▄█" for c in line])
    return out
