"""`python -m saereg.cli`: the same as the `saereg` command."""

import sys

from saereg.cli.app import main

sys.exit(main())
