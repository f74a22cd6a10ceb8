import sys

from actpat.cli import main

sys.exit(main())
