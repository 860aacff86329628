"""The control socket's frames and message shapes."""
