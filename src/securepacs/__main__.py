"""``python -m securepacs``."""

from securepacs.cli.main import main

main()
