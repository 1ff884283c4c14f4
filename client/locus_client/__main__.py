"""`python -m locus_client`: the `locus` command without its script on PATH."""

import sys

from locus_client.cli import main

sys.exit(main())
