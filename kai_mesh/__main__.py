"""`python -m kai_mesh` is the `kai-mesh` command."""

import sys

from kai_mesh.cli.main import main

sys.exit(main())
