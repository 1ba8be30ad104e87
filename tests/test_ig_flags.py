"""Every flag ``ig`` v0.25 gives a trace gadget means the same in igrun: same long name, same
short letter, same default.

The table is ``ig``'s, read from its sources at v0.25.0: each gadget's ``ParamDescs`` in
``pkg/gadgets/trace/<name>/tracer/gadget.go``, the flags every gadget gets in
``cmd/common/registry.go`` (``-o``/``--output``, ``-F``/``--filter``, ``-t``/``--timeout``)
and the local manager's in ``pkg/operators/localmanager/localmanager.go`` (``-c``,
``--host``, ``-r``, ``--containerd-namespace``). ``ig`` gives ``--sort`` and ``-m``/
``--max-rows`` only to gadgets that sort (``pkg/gadgets/params.go``), none of them a trace
gadget: igrun's are extras, and the max-rows operator keeps only ``--max-rows`` where the
gadget's own ``-m`` means something else (``trace fsslower -m`` is the minimum latency).
"""

from __future__ import annotations

import argparse

import pytest

from igrun.core import plugins
from igrun.core.cli.flags import gadget_parser
from igrun.core.params import TypeHint

Flags = dict[str, tuple[str | None, str | None]]
"""long name -> (short letter, default); a default of None is not compared (it depends on
the host, like the runtimes present)."""

IG_COMMON: Flags = {
    "output": ("o", "columns"),
    "filter": ("F", None),
    "timeout": ("t", None),  # ig: whole seconds, 0 to disable; igrun: a duration, 5 is 5s
    "containername": ("c", ""),
    "host": (None, "false"),
    "runtimes": ("r", None),
    "containerd-namespace": (None, "k8s.io"),
}

IG_TRACE: dict[str, Flags] = {
    "exec": {"cwd": (None, "false"), "ignore-errors": (None, "false")},
    "open": {"full-path": (None, "false"), "prefixes": (None, "")},
    "signal": {
        "pid": (None, "0"),
        "signal": (None, ""),
        "failed-only": ("f", "false"),
        "kill-only": ("k", "false"),
    },
    "mount": {},
    "bind": {"pid": (None, "0"), "ports": ("P", ""), "ignore-errors": ("i", "true")},
    "capabilities": {"audit-only": (None, "true"), "unique": (None, "false")},
    "oomkill": {},
    "fsslower": {"min": ("m", "10"), "filesystem": ("f", "ext4")},
    "tcpconnect": {"min": (None, "0"), "latency": (None, "false")},
    "tcp": {},
    "tcpdrop": {},
    "tcpretrans": {},
}

MISSING: dict[str, set[str]] = {}
"""``ig`` flags igrun does not have yet (none)."""

IGRUN_SHORT_EXTRAS = {"h": "help", "v": "verbose", "m": "max-rows"}
"""Short letters igrun adds where ``ig`` has none for the gadget."""


def _parser(gadget: str) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The gadget's parser and, per option string, the param key it sets."""
    registry = plugins.PluginRegistry()
    cls = registry.gadget(f"trace {gadget}")
    parser, routes = gadget_parser(cls, registry)
    keys = {"-h": "help", "--help": "help", "-v": "verbose", "--verbose": "verbose"}
    for opt, action in parser._option_string_actions.items():
        if action.dest in routes:
            keys[opt] = routes[action.dest][1]
    return parser, keys


def _defaults(gadget: str) -> dict[str, tuple[str, TypeHint]]:
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    registry = plugins.PluginRegistry()
    cls = registry.gadget(f"trace {gadget}")
    descs = [*cls.params, *RUNTIME_PARAMS]
    for op in Runtime(registry.operators()).operators_for(cls):
        descs += op.params
    return {d.key: (d.default, d.type_hint) for d in descs}


@pytest.mark.parametrize("gadget", sorted(IG_TRACE))
def test_every_ig_flag_means_the_same(gadget: str) -> None:
    _, keys = _parser(gadget)
    defaults = _defaults(gadget)
    expected = {**IG_COMMON, **IG_TRACE[gadget]}
    missing = MISSING.get(gadget, set())
    for key, (short, default) in expected.items():
        if key in missing:
            assert f"--{key}" not in keys, f"{gadget}: --{key} exists now, drop it from MISSING"
            continue
        assert keys.get(f"--{key}") == key, f"trace {gadget}: no --{key}"
        if short is not None:
            assert keys.get(f"-{short}") == key, (
                f"trace {gadget}: -{short} is {keys.get(f'-{short}')!r} in igrun, {key!r} in ig"
            )
        if default is not None:
            assert defaults[key][0] == default, f"trace {gadget} --{key}: default"


@pytest.mark.parametrize("gadget", sorted(IG_TRACE))
def test_no_short_flag_of_igrun_means_something_else_in_ig(gadget: str) -> None:
    """Each short letter is ig's for this gadget (same meaning, checked above) or one of the
    few igrun adds, and then only where ig gives the letter no other meaning."""
    _, keys = _parser(gadget)
    ig_shorts = {
        short: key
        for key, (short, _) in {**IG_COMMON, **IG_TRACE[gadget]}.items()
        if short is not None
    }
    for opt, key in keys.items():
        if opt.startswith("--"):
            continue
        letter = opt[1:]
        if letter in ig_shorts:
            assert key == ig_shorts[letter], f"trace {gadget}: {opt}"
        else:
            assert IGRUN_SHORT_EXTRAS.get(letter) == key, f"trace {gadget}: {opt} is {key}"


def test_fsslower_m_is_the_minimum_latency_and_max_rows_stays_long() -> None:
    parser, keys = _parser("fsslower")
    assert keys["-m"] == "min" and keys["--max-rows"] == "max-rows"
    args = parser.parse_args(["-m", "5", "--max-rows", "3"])
    assert (getattr(args, "g.min"), getattr(args, "o.limit.max-rows")) == ("5", "3")
    _, exec_keys = _parser("exec")
    assert exec_keys["-m"] == "max-rows"


def test_every_flag_has_help_in_one_style() -> None:
    """``--help`` reads as one text: each flag's help starts in lower case (an acronym such
    as TOML may lead), says what the flag does and ends without a period."""
    from igrun.core.run.local import RUNTIME_PARAMS

    registry = plugins.PluginRegistry()
    descs = [(f"runtime --{d.key}", d) for d in RUNTIME_PARAMS]
    for name in registry.gadgets():
        descs += [(f"{name} --{d.key}", d) for d in registry.gadget(name).params]
    for op in registry.operators():
        descs += [(f"operator {op.name} --{d.key}", d) for d in op.params]
    assert len(descs) > 30
    for where, d in descs:
        text = d.description
        assert text, f"{where}: no help"
        first = text.split()[0]
        assert not (first[0].isupper() and first[1:].islower()), f"{where}: {text!r}"
        assert not text.endswith("."), f"{where}: {text!r}"
