"""``python -m matrix_core`` runs the ``matrix`` command line."""

from matrix_core.cli import main

main()
