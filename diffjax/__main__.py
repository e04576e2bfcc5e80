"""``python -m diffjax ...``: see :mod:`diffjax.cli`."""

from diffjax.cli import main

if __name__ == "__main__":
    main()
