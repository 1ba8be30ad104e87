"""numpy, imported on first use.

Importing numpy takes about 100 ms, more than loading and attaching a gadget's programs. The
modules a run goes through before its programs are attached name numpy as ``np`` through
:data:`numpy` here, so that the import happens when a batch is first built (or in the thread
:func:`preload` starts while the kernel verifies the programs), not before the load.
Type checkers see the real module::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from igrun.core.lazy import numpy as np
"""

from __future__ import annotations

import importlib
import threading
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for module ``name`` until an attribute is asked for, then takes the real
    module's attributes over (later lookups cost what a module's do)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_loaded"] = False

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self.__name__)
        if not self.__dict__["_lazy_loaded"]:
            self.__dict__.update(
                {k: v for k, v in vars(real).items() if k not in ("__name__", "__spec__")}
            )
            self.__dict__["_lazy_loaded"] = True
        return getattr(real, attr)


numpy: Any = LazyModule("numpy")
"""``np`` for the modules on the way to attach (see the module's docstring)."""

_preloading: threading.Thread | None = None


def preload() -> None:
    """Import numpy in a thread, now: called while the kernel loads a gadget's programs
    (the calling thread waits in a system call, without the interpreter's lock), so that
    the first batch finds numpy imported."""
    global _preloading
    if _preloading is None:
        _preloading = threading.Thread(
            target=importlib.import_module, args=("numpy",), name="igrun-numpy", daemon=True
        )
        _preloading.start()
