import sys

from minicloud.cli import main

sys.exit(main())
