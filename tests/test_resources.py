"""Typed run resources and the chain's dependencies: what is asked for by type is found, what
is missing is refused before anything loads, naming both sides."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from igrun.core import (
    PRIORITY_ENRICH,
    PRIORITY_OUTPUT,
    Category,
    Field,
    Gadget,
    Kind,
    MissingDependency,
    Operator,
    Resources,
    Schema,
)
from igrun.core.operator import order
from igrun.core.run.local import Runtime
from igrun.operators.limit import LimitOperator
from igrun.operators.sort import SortOperator

CORE = Path(__file__).parent.parent / "core"


@dataclass
class Passwd:
    """A third party's service: user names by uid."""

    names: dict[int, str]


class Plain(Gadget):
    name = "plain"
    category = Category.TRACE
    schema = Schema([Field("uid", Kind.UINT)])


class NeedsPasswd(Plain):
    name = "needspasswd"
    requires = (Passwd,)


class PasswdOperator(Operator):
    name = "passwd"
    provides = (Passwd,)


class UserOperator(Operator):
    """Names users: needs the passwd service, and the sort operator by name."""

    name = "user"
    priority = PRIORITY_ENRICH - 10  # would run first, were it not for what it requires
    requires = (Passwd,)


class AfterSort(Operator):
    name = "aftersort"
    priority = PRIORITY_OUTPUT
    dependencies = ("sort",)


def test_resources_are_found_by_type_and_fall_back_to_the_process() -> None:
    process = Resources()
    run = Resources(process)
    assert run.get(Passwd) is None
    process.provide(Passwd({0: "root"}), by="passwd")
    assert run.require(Passwd, by="test").names == {0: "root"}
    own = Passwd({0: "toor"})
    run.provide(own, by="passwd")
    assert run.get(Passwd) is own and run.provider(Passwd) == "passwd"
    run.withdraw(Passwd)
    assert run.get(Passwd) is not own  # the process's again


def test_a_value_is_refused_under_a_type_it_is_not() -> None:
    with pytest.raises(TypeError, match="passwd provides a str as Passwd"):
        Resources().provide("root", by="passwd", kind=Passwd)


def test_a_missing_resource_names_who_asked_and_who_provides_it() -> None:
    resources = Resources()
    resources.providers = {Passwd: ["passwd"]}
    with pytest.raises(MissingDependency) as info:
        resources.require(Passwd, by="operator 'user'")
    assert str(info.value) == (
        "operator 'user' needs Passwd, provided by operator 'passwd', which is not in this "
        "run's chain"
    )
    assert info.value.exit_code == 2


def test_the_chain_is_checked_before_anything_loads() -> None:
    """No root, no BTF, no bpffs needed: the check comes before the host check."""
    known = [PasswdOperator, UserOperator, SortOperator]
    cases = [
        (
            Runtime(known, chain=["user"]),
            Plain,
            "operator 'user' needs Passwd, provided by operator 'passwd', which is not in "
            "this run's chain",
        ),
        (
            Runtime([UserOperator]),
            Plain,
            "operator 'user' needs Passwd, and no installed operator provides it",
        ),
        (
            Runtime(known, chain=["passwd"]),
            NeedsPasswd,
            None,
        ),
        (
            Runtime(known, chain=["user"]),
            NeedsPasswd,
            "gadget 'trace needspasswd' needs Passwd, provided by operator 'passwd', which is "
            "not in this run's chain",
        ),
        (
            Runtime([PasswdOperator, AfterSort]),
            Plain,
            "operator 'aftersort' needs operator 'sort', which is not in this run's chain for "
            "trace plain",
        ),
    ]
    for runtime, gadget, message in cases:
        if message is None:
            runtime.check_chain(gadget)
            continue
        with pytest.raises(MissingDependency) as info:
            runtime.run(gadget, *runtime.params_for(gadget))
        assert str(info.value) == message


def test_a_provider_runs_before_what_requires_it() -> None:
    assert [op.name for op in order([UserOperator, PasswdOperator])] == ["passwd", "user"]


def test_limit_only_orders_itself_after_sort() -> None:
    """Limit works without sort (a stream's -m): sort is an order, not a dependency."""
    Runtime([LimitOperator], chain=["limit"]).check_chain(Plain)
    assert [op.name for op in order([LimitOperator, SortOperator])] == ["sort", "limit"]


def test_core_imports_no_operator() -> None:
    """Operators declare what the process shares (Operator.share): core needs none of them."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("igrun.operators")]
    assert offenders == []
