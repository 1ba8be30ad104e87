"""Running a gadget in-process against the real kernel, for the gadgets' tests.

``trace(Gadget, action)`` loads and attaches the gadget, runs ``action`` (which triggers the
events) once the programs are attached, ends the run, and returns every event as the JSON
output would show it (one dict per event, nested keys as in ``-o json``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from igrun.core import PRIORITY_OUTPUT, Batch, Gadget, GadgetContext, Operator
from igrun.core.runtime import Runtime
from igrun.operators.sockets import SocketsOperator


class Capture(Operator):
    """Keeps every row that reaches the end of the chain."""

    name = "capture"
    priority = PRIORITY_OUTPUT
    rows: ClassVar[list[dict[str, Any]]] = []

    def process(self, batch: Batch) -> Batch:
        Capture.rows.extend(batch.to_dicts())
        return batch


class Trigger:
    """Runs ``action`` once the gadget is attached, then ends the run."""

    def __init__(self, action: Callable[[], None], settle: float) -> None:
        self.action = action
        self.settle = settle
        self.error: BaseException | None = None

    def igrun_run_started(self, ctx: GadgetContext) -> None:
        def work() -> None:
            try:
                self.action()
            except BaseException as exc:
                self.error = exc
            finally:
                time.sleep(self.settle)
                ctx.cancel()

        threading.Thread(target=work, daemon=True).start()

    def igrun_run_finished(self, ctx: GadgetContext, error: BaseException | None) -> None:
        pass


def trace(
    gadget: type[Gadget],
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
    settle: float = 0.3,
) -> list[dict[str, Any]]:
    """The events ``gadget`` saw while ``action`` ran; ``values`` are flat params
    (``{"ignore-errors": "true"}``, ``{"runtime.timeout": "5s"}``); ``resources`` are
    provided to the run by their types (e.g. a ``MntnsFilter`` of the test's own map)."""
    Capture.rows = []
    runtime = Runtime([SocketsOperator, Capture])  # sockets: only for gadgets that ask
    params = runtime.params_for(gadget, {"runtime.timeout": "20s", **(values or {})})
    trigger = Trigger(action, settle)
    runtime.run(gadget, *params, hooks=trigger, resources=resources)
    if trigger.error:
        raise trigger.error
    return Capture.rows


def marker() -> str:
    """A string no other process on the host will use."""
    return f"igrun-{uuid.uuid4().hex[:10]}"
