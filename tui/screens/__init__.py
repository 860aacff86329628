"""One module per screen; `SCREENS` lists them in the order of their keys (1…7)."""
