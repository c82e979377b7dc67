import sys

from imgsearch.command_line.main import main

sys.exit(main())
