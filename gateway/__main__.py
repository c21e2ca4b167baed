"""`python -m gateway` = the `enapter-gateway` command."""

import sys

from gateway.cli import main

sys.exit(main())
