"""Monitors and links, as Erlang has them: how a process learns that another ended, and why.

``monitor(pid)`` asks for one ``("DOWN", ref, "process", pid, reason)`` message; ``link(pid)`` ties two processes'
fates, so that an abnormal end of one is an exit signal to the other (or, with ``process_flag("trap_exit", True)``,
an ``("EXIT", pid, reason)`` message). Both rest on the ``Watchers`` of what they watch, told once when it ends.

>>> import sslsocket
>>> pid, ref = sslsocket.spawn_monitor(lambda: None)
>>> sslsocket.receive(lambda m: m[0] == "DOWN" and m[1] is ref, timeout=5) == ("DOWN", ref, "process", pid, "normal")
True
>>> ref = sslsocket.monitor(pid)  # it has ended: at once, "noproc"
>>> sslsocket.receive(lambda m: m[0] == "DOWN" and m[1] is ref, timeout=5)[4]
'noproc'
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from . import process
from .errors import BadArgument
from .process import Pid
from .sockets import Socket

_refs = itertools.count(1)


class Ref:
    """``make_ref()``: what ``monitor`` returns, unique, and what its ``DOWN`` message carries."""

    __slots__ = ("id", "target", "watcher")

    def __init__(self, target: Pid | Socket, watcher: Pid) -> None:
        self.id = next(_refs)
        #: What is monitored, and who monitors it.
        self.target = target
        self.watcher = watcher

    def __repr__(self) -> str:
        return f"#Ref<0.{self.id}>"


def monitor(target: Pid | Socket | threading.Thread) -> Ref:
    """``erlang:monitor(process, Pid)``: the calling process gets ``("DOWN", ref, "process", pid, reason)`` when
    ``pid`` ends, at once with ``"noproc"`` if it has already. A ``Socket`` gives ``("DOWN", ref, "socket", sock,
    reason)`` when it has ended, ``reason`` as its ``socket_closed`` message says, or ``"closed"`` (its owner closed
    it), ``"owner_ended"``, ``"stopped"``. A monitor goes when its ``DOWN`` comes, or with the process that set it."""
    target = process.as_pid(target)
    me = process.self()
    if isinstance(target, Pid):
        kind = "process"
    elif isinstance(target, Socket):
        kind = "socket"
    else:
        raise BadArgument(f"monitor takes a Pid, a Socket or a Thread, not {target!r}", ("bad_argument", target))
    ref = Ref(target, me)
    me.watch(ref, target.watchers, ref)

    def down(reason: Any) -> None:
        me.hear(ref, ("DOWN", ref, kind, target, reason))

    if not target.watchers.add(ref, down):
        down("noproc" if kind == "process" else target.watchers.reason)
    return ref


def demonitor(ref: Ref) -> None:
    """``erlang:demonitor(Ref, [flush])``: no ``DOWN`` for ``ref`` after this, nor one left in the mailbox."""
    if not isinstance(ref, Ref):
        raise BadArgument(f"demonitor takes what monitor returned, not {ref!r}", ("bad_argument", ref))
    ref.watcher.unwatch(ref)  # under the watcher's lock, as a DOWN is put: none comes after this
    ref.target.watchers.remove(ref)
    ref.watcher.take(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] is ref)


def spawn_monitor(func: Callable[..., object], *args: object) -> tuple[Pid, Ref]:
    """``spawn_monitor``: a new process, monitored before it runs."""
    pid = process.new(func)
    ref = monitor(pid)
    return process.start(pid, func, *args), ref


def link(other: Pid | threading.Thread) -> None:
    """``link(Pid)``: when either process ends for any reason but ``"normal"``, the other gets ``Exit(reason)`` at
    its next (or current) wait; a process that traps exits gets ``("EXIT", pid, reason)`` instead, for every end.
    Linking to a process that has ended is as if it ended now, with ``"noproc"``."""
    other = _pid(other, "link")
    me = process.self()
    if other is me:
        return
    me.watch(("link", other), other.watchers, ("link", me))
    if not other.watchers.add(("link", me), partial(_linked_end, me, other)):
        _linked_end(me, other, "noproc")
        return
    me.watchers.add(("link", other), partial(_linked_end, other, me))
    if not other.watch(("link", me), me.watchers, ("link", other)):  # it ended meanwhile, and told us
        me.watchers.remove(("link", other))


def unlink(other: Pid | threading.Thread) -> None:
    """``unlink(Pid)``: the two processes' ends no longer touch each other, and an exit signal of this link that
    has not taken effect yet never will."""
    other = _pid(other, "unlink")
    me = process.self()
    for one, two in ((me, other), (other, me)):
        one.unwatch(("link", two))
        two.watchers.remove(("link", one))
    me.forget_exit_from(other)


def spawn_link(func: Callable[..., object], *args: object) -> Pid:
    """``spawn_link``: a new process, linked to the caller before it runs."""
    pid = process.new(func)
    link(pid)
    return process.start(pid, func, *args)


def process_flag(flag: str, value: bool) -> bool:
    """``process_flag(trap_exit, Bool)``: the calling process's links' ends come as messages; returns the old
    value."""
    if flag != "trap_exit" or not isinstance(value, bool):
        raise BadArgument(
            f"process_flag takes ('trap_exit', True or False), not ({flag!r}, {value!r})", ("bad_argument", flag)
        )
    me = process.self()
    old, me.trap_exit = me.trap_exit, value
    return old


def _linked_end(partner: Pid, ended: Pid, reason: Any) -> None:
    """``ended``, linked to ``partner``, ended for ``reason``: the link is gone, and ``partner`` hears of it, if the
    link is still there."""
    if partner.trap_exit:
        partner.hear(("link", ended), ("EXIT", ended, reason))
    elif partner.unwatch(("link", ended)) and reason != "normal":
        partner.exit(reason, ended)


def _pid(who: object, call: str) -> Pid:
    pid = process.as_pid(who)
    if not isinstance(pid, Pid):
        raise BadArgument(f"{call} takes a Pid or a Thread, not {who!r}", ("bad_argument", who))
    return pid


def links(pid: Pid) -> list[Pid]:
    """The processes ``pid`` is linked to: for ``sslsocket.i()``."""
    return [key[1] for key in pid.watchers.waiting() if type(key) is tuple and key[1].alive]


def monitors(watched: Pid | Socket) -> int:
    """How many monitors watch ``watched``: for ``sslsocket.i()``."""
    return sum(1 for key in watched.watchers.waiting() if type(key) is Ref)
