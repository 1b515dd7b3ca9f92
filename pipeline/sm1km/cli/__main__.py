"""``python -m sm1km.cli``: the same as the ``sm1km`` command."""

import sys

from sm1km.cli import main

sys.exit(main())
