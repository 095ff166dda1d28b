"""`waypost ...` with the identity cache's life stretched to an hour (bench/instructions.py).

Under callgrind a server runs some 50 times slower; a 1 s cache would then expire about
50 times more often per request than at full speed, and the count would measure that."""

from __future__ import annotations

import sys
from datetime import timedelta

from core import usecases
from entrypoints.cli import main

defaults = usecases.IdentityDeps.__init__.__kwdefaults__
if defaults is None or "recent" not in defaults:
    raise SystemExit("IdentityDeps lost its `recent` keyword: update bench/_serve_callgrind.py")
defaults["recent"] = timedelta(hours=1)
sys.argv[0] = "waypost"
sys.exit(main())
