"""Who is in a mesh: node identities, the genesis that pins a mesh, `kai://` addresses."""
