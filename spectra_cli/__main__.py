import sys

from spectra_cli.cli import main

sys.exit(main())
