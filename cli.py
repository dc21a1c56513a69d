"""``python cli.py fit ...`` is the same as ``lightning-search fit ...``."""

from lightning_search.cli import main

if __name__ == "__main__":
    main()
