import sys

from imgen.cli import main

sys.exit(main())
