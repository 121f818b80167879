"""``python -m traitflow.cli``: the ``traitflow`` command."""

import sys

from traitflow.cli import main

sys.exit(main())
