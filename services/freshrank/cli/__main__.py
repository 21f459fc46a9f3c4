import sys

from freshrank.cli import main

sys.exit(main())
