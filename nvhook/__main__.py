"""``python -I -m nvhook``: the same entry point as the console script."""

from nvhook.entry import main

main()
