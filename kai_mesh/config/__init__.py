"""A node's files and configuration: paths, TOML config, Reticulum interfaces, key files."""
