"""Services on the mesh (issue 11): the runtime that makes manifests real."""
