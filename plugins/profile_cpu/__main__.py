"""``python -m igrun.plugins.profile_cpu {folded,pprof,svg} [FILE]``: a saved ``-o json``
profile as folded stacks, pprof or a flame-graph SVG (see :func:`.formats.main`)."""

from igrun.plugins.profile_cpu.formats import main

raise SystemExit(main())
