import sys

from strata.streams.cli import main

sys.exit(main())
