"""Shell completion: ``igrun completion bash|zsh|fish`` prints a script that asks igrun itself.

The scripts are small and fixed; what to offer comes from ``igrun __complete``, which reads
the words typed so far and answers one candidate a line: commands, categories, gadget names,
the flags of the gadget being typed, field names after ``-F``, ``--sort`` and
``-o columns=``, the values a param allows, and container names after ``-c``. It builds the
same parsers the commands use, so completion cannot drift from the flags; it loads no BPF
object and asks the container runtimes only when a container name is wanted.

bash splits ``comm:sh`` and ``columns=pid`` into several words (``COMP_WORDBREAKS``), so its
script passes the line up to the cursor and the word bash will replace; igrun answers with
what replaces that word.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from igrun.core.gadget import Gadget
    from igrun.core.params import ParamDesc
    from igrun.core.plugins import PluginRegistry

COMMANDS = (
    "list",
    "list-containers",
    "run",
    "serve",
    "config",
    "completion",
    "man",
    "version",
    "help",
)
TOP_FLAGS = ("--config", "--help", "--remote", "--version", "-v", "-vv")
SHELLS = ("bash", "zsh", "fish")

BASH = """\
# igrun completion for bash: eval "$(igrun completion bash)", or save it as
# /usr/share/bash-completion/completions/igrun
_igrun() {
    local IFS=$'\\n'
    COMPREPLY=($(command igrun __complete bash "${COMP_LINE:0:COMP_POINT}" \
"${COMP_WORDS[COMP_CWORD]}" 2>/dev/null))
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[:=,] ]]; then
        compopt -o nospace 2>/dev/null
    fi
}
complete -o default -F _igrun igrun
"""

ZSH = """\
#compdef igrun
# igrun completion for zsh: save as _igrun in a folder of $fpath, or
# source <(igrun completion zsh)
_igrun() {
    local -a items
    items=("${(@f)$(command igrun __complete words -- "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    items=(${items:#})
    if (( ${#items} )); then
        compadd -Q -S '' -- ${(M)items:#*[:=,]}
        compadd -Q -- ${items:#*[:=,]}
    else
        _files
    fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _igrun "$@"
else
    compdef _igrun igrun
fi
"""

FISH = """\
# igrun completion for fish: igrun completion fish > ~/.config/fish/completions/igrun.fish
function __igrun_complete
    set -l tokens (commandline -opc) (commandline -ct)
    command igrun __complete words -- $tokens[2..-1] 2>/dev/null
end
complete -c igrun -f -a '(__igrun_complete)'
complete -c igrun -l config -r -F -d 'config file'
complete -c igrun -n '__fish_seen_subcommand_from run; and test (count (commandline -opc)) -eq 2' -F
"""


def script(shell: str) -> str:
    return {"bash": BASH, "zsh": ZSH, "fish": FISH}[shell]


def _split(line: str) -> tuple[list[str], str]:
    """The finished words of ``line`` and the one being typed ("" after a space); an open
    quote is closed for the split."""
    for closing in ("", '"', "'"):
        try:
            words = shlex.split(line + closing)
            break
        except ValueError:
            continue
    else:
        words = line.split()
    if not line or line[-1].isspace():
        return words, ""
    return words[:-1], (words[-1] if words else "")


def bash(registry: PluginRegistry, line: str, bash_word: str) -> list[str]:
    """Candidates for bash: each replaces ``bash_word``, the tail of the word being typed
    that bash sees as a word of its own (after ``:`` or ``=``)."""
    words, current = _split(line)
    head = current[: len(current) - len(bash_word)] if current.endswith(bash_word) else ""
    return [c[len(head) :] for c in candidates(registry, words[1:], current)]


def candidates(registry: PluginRegistry, words: Sequence[str], current: str) -> list[str]:
    """What may follow ``words`` (the command line after ``igrun``) and start with
    ``current``."""
    return sorted({c for c in _all(registry, list(words), current) if c.startswith(current)})


def _all(registry: PluginRegistry, words: list[str], current: str) -> Iterable[str]:
    from igrun.core.gadget import Category

    while words and words[0] in ("-v", "-vv", "--verbose"):
        words = words[1:]
    if words[-1:] == ["--config"]:
        return []  # a file: the shell's own completion
    config_flags: list[str] = []
    if "--config" in words:
        i = words.index("--config")
        words = words[:i] + words[i + 2 :]
        config_flags = _runtime_flags()
    categories = [c.value for c in Category]
    gadgets = sorted(registry.gadgets().values(), key=lambda g: g.full_name())
    if not words:
        return [*COMMANDS, *categories, *TOP_FLAGS, *config_flags]
    if config_flags and words[0].startswith("-"):  # igrun --config FILE -t 1s …
        return config_flags if words[-1] not in config_flags else []
    first, rest = words[0], words[1:]
    if first in categories:
        if not rest:
            return [g.name for g in gadgets if g.category.value == first] + ["--help"]
        return _gadget(registry, f"{first} {rest[0]}", rest[1:], current)
    if "_" in first and first.partition("_")[0] in categories:
        return _gadget(registry, first.replace("_", " ", 1), rest, current)
    if first == "list":
        if rest[-1:] in (["-o"], ["--output"]):
            return ["columns", "json"]
        return [*categories, "-o", "--output", "--help"]
    if first == "completion":
        return [*SHELLS, "--help"] if not rest else []
    if first == "config":
        if not rest:
            return ["default", "view", "--help"]
        if len(rest) == 1:
            return categories
        if len(rest) == 2:
            return [g.name for g in gadgets if g.category.value == rest[1]]
        return []
    if first == "list-containers":
        if rest[-1:] in (["-o"], ["--output"]):
            return ["columns", "json"]
        if rest[-1:] in (["-r"], ["--runtimes"]):
            return _runtime_names()
        flags = ["-w", "--watch", "-o", "--output", "-r", "--runtimes", "--containerd-namespace"]
        return [*flags, "-v", "--help"]
    if first in ("man", "version"):
        return ["--help"]
    return []


def _runtime_flags() -> list[str]:
    """The flags ``igrun --config FILE`` takes after the file."""
    from igrun.core.cli.flags import flag_spellings
    from igrun.core.run.local import RUNTIME_PARAMS

    return [flag for desc in RUNTIME_PARAMS for flag in flag_spellings(desc)]


def _runtime_names() -> list[str]:
    from igrun.core.containers.engines import RUNTIME_NAMES

    return list(RUNTIME_NAMES)


def _gadget(registry: PluginRegistry, name: str, words: list[str], current: str) -> list[str]:
    from igrun.core.cli.flags import gadget_parser
    from igrun.core.errors import IgrunError

    try:
        gadget = registry.gadget(name)
        parser, _ = gadget_parser(gadget, registry)
    except IgrunError:
        return []
    by_flag: dict[str, ParamDesc] = {}
    from igrun.core.cli.flags import flag_spellings
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    operators = Runtime(registry.operators()).operators_for(gadget)
    descs = [*gadget.params, *RUNTIME_PARAMS, *(d for op in operators for d in op.params)]
    for desc in descs:
        for flag in flag_spellings(desc):
            by_flag[flag] = desc
    previous = words[-1] if words else ""
    wants = by_flag.get(previous)
    if wants is not None and wants.type_hint.value != "bool":
        return flag_values(wants, gadget, operators, current)
    if current.startswith("-"):
        return [opt for action in parser._actions for opt in action.option_strings]
    return []


def _field_names(gadget: type[Gadget], operators: Sequence[object]) -> list[str]:
    names = list(gadget.schema.names())
    for op in operators:
        names += [f.name for f in getattr(op, "fields", ())]
    return names


def flag_values(
    desc: ParamDesc, gadget: type[Gadget], operators: Sequence[object], current: str
) -> list[str]:
    """The values of one flag: its choices, fields, or container names."""
    from igrun.core.params import ValueHint

    fields = _field_names(gadget, operators)
    done, _, _last = current.rpartition(",")
    done = done + "," if done else ""
    if desc.key == "filter":
        return [] if ":" in current else [f"{f}:" for f in fields]
    if desc.key == "sort":
        return [f"{done}{sign}{f}" for f in fields for sign in ("", "-")]
    if desc.key == "output":
        if current.startswith("columns="):
            after = current.removeprefix("columns=")
            done, _, _ = after.rpartition(",")
            done = "columns=" + (done + "," if done else "")
            return [f"{done}{sign}{f}" for f in fields for sign in ("", "+", "-")]
        return ["columns", "json", "jsonpretty", "yaml", "columns="]
    if desc.possible_values:
        return list(desc.possible_values)
    if desc.value_hint is ValueHint.LOCAL_CONTAINER:
        return [done + name for name in container_names()]
    if desc.key == "runtimes":
        return [done + name for name in _runtime_names()]
    return []


def container_names() -> list[str]:
    """The names of the containers running now (none without root)."""
    import os

    if os.geteuid() != 0:
        return []
    from igrun.core.containers.collection import ContainerCollection
    from igrun.core.containers.discovery import Discovery, select_clients

    collection = ContainerCollection()
    Discovery(collection, select_clients()).first_scan()
    return sorted({c.name for c in collection.containers()})
