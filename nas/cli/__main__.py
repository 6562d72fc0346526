"""``python -m nas.cli``: the ``srnas`` command."""

from nas.cli.main import main

raise SystemExit(main())
