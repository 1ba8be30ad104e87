"""cffi (API mode, out of line) builder for ``igrun.core._libbpf`` over the system libbpf.

The declarations live in ``igrun_libbpf.h``, ``igrun_json.h`` and ``igrun_columns.h``, the C
in the ``.c`` files; this file only wires them together. The package version is compiled in
and checked at import, so a stale in-place build fails loudly instead of misbehaving.
"""

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise RuntimeError("no version in pyproject.toml")
    return match.group(1)


ffibuilder = FFI()
ffibuilder.cdef(
    (HERE / "igrun_libbpf.h").read_text()
    + (HERE / "igrun_json.h").read_text()
    + (HERE / "igrun_columns.h").read_text()
    + '\nextern "Python+C" void igr_py_log(int level, const char *msg);\n'
)
ffibuilder.set_source_pkgconfig(
    "igrun.core._libbpf",
    ["libbpf"],
    '#include "igrun_libbpf.h"\n#include "igrun_json.h"\n#include "igrun_columns.h"\n',
    sources=[str(HERE / n) for n in ("igrun_libbpf.c", "igrun_json.c", "igrun_columns.c")],
    include_dirs=[str(HERE)],
    define_macros=[("IGRUN_VERSION", '"' + _version() + '"')],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
