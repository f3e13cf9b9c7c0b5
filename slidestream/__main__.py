import sys

from slidestream.cli import main

sys.exit(main())
