"""``python -m diffjax ...``: see :mod:`diffjax.run.cli`."""

from diffjax.run.cli import main

if __name__ == "__main__":
    main()
