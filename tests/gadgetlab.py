"""Running a gadget in-process against the real kernel, for the gadgets' tests.

``trace(Gadget, action)`` is :func:`igrun.testing.trace` with the socket enricher available
(for the gadgets that ask for it): it loads and attaches the gadget, runs ``action`` once every
program is attached, ends the run, returns every event as the JSON output would show it (one
dict per event, nested keys as in ``-o json``) and checks that the run left nothing behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from igrun.core import PRIORITY_OUTPUT, Batch, Gadget, GadgetContext, Operator, Params
from igrun.core.run.local import Runtime
from igrun.operators.sockets import SocketsOperator
from igrun.testing import marker
from igrun.testing import trace as run_and_trace

__all__ = ["marker", "trace"]


class Capture(Operator):
    """Keeps every row that reaches the end of the chain, in the instance of its run."""

    name = "capture"
    priority = PRIORITY_OUTPUT

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        super().__init__(ctx, params)
        self.rows: list[dict[str, Any]] = []

    def process(self, batch: Batch) -> Batch:
        self.rows.extend(batch.to_dicts())
        return batch


def trace(
    gadget: type[Gadget],
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
    settle: float = 0.3,
) -> list[dict[str, Any]]:
    """The events ``gadget`` saw while ``action`` ran; ``values`` are flat params
    (``{"ignore-errors": "true"}``, ``{"runtime.timeout": "5s"}``). ``resources`` are
    provided to the run by their types (e.g. a ``MntnsFilter`` of the test's own map)."""
    if not resources:
        return run_and_trace(gadget, action, values, ["sockets"], settle=settle)
    runtime = Runtime([SocketsOperator, Capture])  # sockets: only for gadgets that ask
    params = runtime.params_for(gadget, {"runtime.timeout": "20s", **(values or {})})
    captured: list[Capture] = []
    error: list[BaseException] = []

    def keep(ctx: GadgetContext, operators: list[Operator]) -> None:
        captured.extend(op for op in operators if isinstance(op, Capture))

    def trigger(ctx: GadgetContext, instance: Gadget) -> None:
        def work() -> None:
            try:
                action()
            except BaseException as exc:
                error.append(exc)
            finally:
                time.sleep(settle)
                ctx.cancel()

        threading.Thread(target=work, daemon=True).start()

    runtime.run(gadget, *params, prepare=keep, resources=resources, on_ready=trigger)
    if error:
        raise error[0]
    return captured[0].rows
