"""``python -m topoipam ...``: the same as the ``topoipam`` command."""

import sys

from topoipam.cli.main import main

sys.exit(main())
