"""``python -m inferline``: the same as the ``inferline`` command."""

import sys

from inferline.cli import main

sys.exit(main())
