import sys

from scepd.cli import main

sys.exit(main())
