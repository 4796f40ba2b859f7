"""``python -m voxguard``: the ``voxguard`` command."""

import sys

from voxguard.cli import main

sys.exit(main())
