"""``python -m arrow_rl.cli``: the same command line as the ``arrow-rl`` script."""

from arrow_rl.cli import main

main()
