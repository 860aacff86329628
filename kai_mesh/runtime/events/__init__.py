"""Mesh events in the shell: publish, deliver to interested nodes, follow from the CLI."""
