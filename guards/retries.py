"""Recognising a call that retries an earlier one under a new tool-call id.

Why: exactly-once is keyed by the tool-call id, and a real model never repeats one. If the
checkpoint holding the model's message was not durable when the process died (LangGraph's
``"exit"`` durability writes nothing until the run ends; ``"async"`` writes in the background
while the tool already runs), the resumed run asks the model again and gets the same action
under a new id. The ledger still knows the first attempt: it started (durably, before its side
effect) with the same tool and arguments.

Two defences, by durability mode:

* ``"sync"`` and ``"async"``: before ``tool.started`` commits, the guard waits until the
  checkpoint the call came from (its *origin*, the checkpoint its task ran from) is committed
  (:func:`origin_of`; ``Ledger.wait_for_checkpoint``). A resumed run then finds the model's
  message and its id, and the call is replayed or in doubt by id.
* whatever the mode, a new call is a *retry* of an earlier call X when they name the same tool
  with the same arguments on the same thread, X started (completed or in doubt) or holds an
  approval not yet used, they did not come from the same model message, and X's outcome never
  reached the model that made the new call: its state holds no tool message answering X, and
  either it holds X's request (the model asked, and asks again: a crash took the answer, or an
  application sent the request again instead of resuming) or X's origin checkpoint was never
  recorded (the model message itself was lost: ``"exit"``, or ``"async"`` without the wait). A
  state with no messages at all cannot tell: then only a lost origin makes a retry. A policy
  obligation ``new_action: true`` overrides: the call is a new action.

The retry is linked in the history: ``tool.superseded`` on X names the new call, and the new
call's events carry ``retry_of``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Origin", "origin_of", "SeenCalls", "seen_calls"]

#: Where LangGraph keeps a task's checkpoint map, namespace, durability and checkpointer in its config.
#: LangGraph internals (its ``CONFIG_KEY_*`` constants, private), each needed because no public API
#: tells a tool call which checkpoint it came from or how that checkpoint is being saved:
#: the checkpoint map names the checkpoint of each parent namespace (the call's origin),
_CHECKPOINT_MAP = "checkpoint_map"
#: the run's durability says whether that checkpoint is saved before the step, in the background or at exit,
_DURABILITY = "__pregel_durability"
#: and the run's checkpointer tells whether it writes to the guard's own ledger (only then can it wait).
_CHECKPOINTER = "__pregel_checkpointer"
#: LangGraph's namespace separator (``parent|child:task``).
_NS_SEP = "|"


@dataclass(frozen=True, slots=True)
class Origin:
    """The checkpoint a tool call's task ran from, and how LangGraph saves checkpoints in this run."""

    checkpoint_ns: str
    checkpoint_id: str
    #: ``"sync"``, ``"async"`` (LangGraph's default when none was passed) or ``"exit"``.
    durability: str
    #: Whether the run's checkpointer writes to the same ledger as the guard (then the guard can
    #: wait for its origin to be committed).
    same_ledger: bool

    def to_dict(self) -> dict[str, str]:
        return {"checkpoint_ns": self.checkpoint_ns, "checkpoint_id": self.checkpoint_id}


def origin_of(config: Mapping[str, Any], ledger: Any) -> Origin | None:
    """The origin of the task running with ``config``; ``None`` outside a checkpointed graph run
    (a graph compiled without a checkpointer saves nothing and resumes nothing).

    The task's own namespace is ``<parent ns>|<node>:<task id>`` (or ``<node>:<task id>`` at the
    root); LangGraph's checkpoint map names the checkpoint of each parent namespace.
    """
    conf = config.get("configurable") or {}
    checkpointer = conf.get(_CHECKPOINTER)
    if checkpointer is None:
        return None  # nothing is saved, nothing is resumed: no id to lose
    task_ns = str(conf.get("checkpoint_ns") or "")
    parent_ns = task_ns.rsplit(_NS_SEP, 1)[0] if _NS_SEP in task_ns else ""
    cmap = conf.get(_CHECKPOINT_MAP) or {}
    checkpoint_id = cmap.get(parent_ns) if isinstance(cmap, Mapping) else None
    if not isinstance(checkpoint_id, str) or not checkpoint_id:
        return None
    durability = conf.get(_DURABILITY) or "async"
    same = getattr(checkpointer, "ledger", None) is ledger  # any LangGraph saver may run the graph; warden's has a ledger
    return Origin(parent_ns, checkpoint_id, str(durability), same)


class SeenCalls(NamedTuple):
    """The tool calls a graph state shows: asked for by a model message, and answered by a tool message."""

    asked: frozenset[str]
    answered: frozenset[str]


def seen_calls(state: Any) -> SeenCalls | None:
    """What ``state`` shows of earlier tool calls; ``None`` if it holds no message at all (then it
    cannot tell: the caller falls back to what the history says).

    Walks mappings, lists and tuples (the graph state, its ``messages``) and dataclass/pydantic
    state objects to a bounded depth; reads messages' ``tool_calls`` ids and ``tool_call_id``.
    """
    asked: set[str] = set()
    answered: set[str] = set()
    found = False

    def walk(value: Any, depth: int) -> None:
        nonlocal found
        if depth > 6 or value is None or isinstance(value, (str, bytes, int, float, bool)):
            return
        if hasattr(value, "content") and hasattr(value, "type"):  # a message
            found = True
            tcid = getattr(value, "tool_call_id", None)
            if isinstance(tcid, str):
                answered.add(tcid)
            for call in getattr(value, "tool_calls", None) or ():
                if isinstance(call, Mapping) and isinstance(call.get("id"), str):
                    asked.add(call["id"])
            return
        if isinstance(value, Mapping):
            items: Any = value.values()
        elif isinstance(value, (list, tuple)):
            items = value
        elif hasattr(value, "__dict__"):
            items = vars(value).values()
        else:
            return
        for v in items:
            walk(v, depth + 1)

    walk(state, 0)
    return SeenCalls(frozenset(asked), frozenset(answered)) if found else None
