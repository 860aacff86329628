"""Reticulum as a kai-mesh transport (`transport.ReticulumTransport`); the private modules are its
layers."""
