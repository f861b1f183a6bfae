"""`python -m tritonnet` is the `tritonnet` command."""

import sys

from tritonnet.cli import main

sys.exit(main())
