"""``python -m securepacs.cli``."""

from securepacs.cli.main import main

main()
