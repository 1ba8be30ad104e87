"""``python -m igrun.core.cli``.

The process ends with ``os._exit`` once ``main`` has decided its exit code, after what an
interpreter's exit does that igrun needs (standard streams flushed, ``atexit`` functions
run). The rest of a normal exit only waits on threads that are done with, and it can undo
that code: the head start's thread may still be in the kernel loading programs (a stop
signal came during start-up), and a signal delivered to that thread while the interpreter
finalizes ended the process with SIGINT after ``main`` had returned 0.
"""

import atexit
import contextlib
import os
import sys

from igrun.core.cli.main import main

code = main()
for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
atexit._run_exitfuncs()
os._exit(code)
