import sys

from routercore.cli import main

sys.exit(main())
