"""``python -m scheduler`` is the ``baton`` command."""

from scheduler.ops.cli import main

if __name__ == "__main__":
    main()
