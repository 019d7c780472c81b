"""DNS through systemd-resolved, where it runs (``resolvectl``, per link).

Where resolved does not run, DNS goes to ``/etc/resolv.conf`` as a managed file instead (see
:func:`kvmguest.guest.backends.render_resolv_conf`). Settings made with resolvectl last
until reboot; the backend's persistent file carries the same servers to resolved at boot.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

from kvmguest.guest.command import runner as _run
from kvmguest.guest.payload import DrPayload
from kvmguest.guest.plan import AppliedState

Runner = Callable[[Sequence[str]], "tuple[int, str]"]


@dataclass(frozen=True)
class ResolvedSet:
    device: str
    servers: tuple[str, ...]
    domains: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"dns resolved {self.device}: servers {' '.join(self.servers) or '-'}, "
            f"search {' '.join(self.domains) or '-'}"
        )


@dataclass(frozen=True)
class ResolvedRevert:
    device: str

    def describe(self) -> str:
        return f"dns resolved revert {self.device}"


ResolvedAction = Union[ResolvedSet, ResolvedRevert]  # noqa: UP007 - guest runs on Python < 3.10


@dataclass(frozen=True)
class LinkDns:
    servers: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


def plan_resolved(
    payload: DrPayload, device: str, previous: AppliedState | None, current: LinkDns
) -> list[ResolvedAction]:
    """Changes that make resolved use exactly the payload's DNS on ``device``."""
    actions: list[ResolvedAction] = []
    if previous is not None and previous.resolver == "resolved" and previous.device != device:
        actions.append(ResolvedRevert(previous.device))
    want = LinkDns(payload.dns_servers, payload.dns_search)
    if want == LinkDns():
        # Nothing to set: only take back what a previous site set here.
        if current != LinkDns() and previous is not None and previous.device == device:
            actions.append(ResolvedRevert(device))
    elif current != want:
        actions.append(ResolvedSet(device, want.servers, want.domains))
    return actions


def _after_colon(output: str) -> tuple[str, ...]:
    # "Link 2 (eth0): 192.0.2.53 198.51.100.53"
    _, _, rest = output.partition("):")
    return tuple(rest.split())


class ResolvedCtl:
    """resolvectl, one link at a time."""

    def __init__(self, runner: Runner = _run, resolvectl: str | None = None) -> None:
        self._run = runner
        self._bin = resolvectl or shutil.which("resolvectl") or "resolvectl"

    def _call(self, *args: str) -> str:
        status, output = self._run([self._bin, *args])
        if status != 0:
            raise OSError(f"resolvectl {' '.join(args)}: {output or f'exit {status}'}")
        return output

    def current(self, device: str) -> LinkDns:
        return LinkDns(
            _after_colon(self._call("dns", device)), _after_colon(self._call("domain", device))
        )

    def apply(self, action: ResolvedAction) -> None:
        if isinstance(action, ResolvedRevert):
            self._call("revert", action.device)
            return
        # An empty string clears the list: resolvectl otherwise just prints it.
        self._call("dns", action.device, *(action.servers or ("",)))
        self._call("domain", action.device, *(action.domains or ("",)))
