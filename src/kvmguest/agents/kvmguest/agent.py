"""The KVMGuest agent as the registry knows it. Cheap to import: every method imports what
it needs when it is called (the OCF monitor of every interval comes through here)."""

from __future__ import annotations

from kvmguest.agents.kvmguest.type_name import KVMGUEST
from kvmguest.agents.registry import Agent

TYPE_CHECKING = False  # not typing's: importing typing costs the lean monitor path
if TYPE_CHECKING:
    import asyncio

    from kvmguest.agents.base import Env
    from kvmguest.agents.kvmguest.runtime import KvmRuntime
    from kvmguest.agents.ocf_interface import OcfSide
    from kvmguest.model.attributes import AttrDef, Typed
    from kvmguest.model.config import Block, Config, Diagnostic
    from kvmguest.model.ranges import Range
    from kvmguest.model.resolver import Loaded
    from kvmguest.model.states import MonitorResult


class KVMGuestAgent(Agent):
    type_name = KVMGUEST
    ocf_default = True  # `python -m kvmguest.ocf ACTION` without a type: KVMGuest, as ever

    def type_text(self) -> str:
        import os

        with open(os.path.join(os.path.dirname(__file__), "kvmguest.cf"), encoding="utf-8") as f:
            return f.read()

    def check(self, cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
        from kvmguest.agents.kvmguest.checks import check

        return check(cfg, block, attrs)

    def ranges(self) -> dict[str, Range]:
        from kvmguest.model.ranges import NON_NEGATIVE

        return {"DelayAfterGuestOnline": NON_NEGATIVE, "DelayAfterGuestOffline": NON_NEGATIVE}

    def identity(self, values: dict[str, Typed]) -> str | None:
        from kvmguest.agents.kvmguest.checks import identity

        return identity(values)

    def runtime(self, env: Env, *, shared: bool = False) -> KvmRuntime:
        from kvmguest.agents.kvmguest.runtime import KvmRuntime

        return KvmRuntime(env, shared=shared)

    def prepare_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        from kvmguest.agents.kvmguest.events import register_event_impl

        register_event_impl(loop)

    def ocf(self) -> OcfSide:
        from kvmguest.agents.kvmguest.ocf_side import SIDE

        return SIDE

    def oneshot_recipe(self, loaded: Loaded, resource: str, env: Env) -> dict[str, str] | None:
        from kvmguest.agents.host import DEFAULT_URI
        from kvmguest.agents.kvmguest.params import guest_params

        p = guest_params(loaded, resource, env.system)
        if p.rhev or p.ce_info.get("Enabled") == "1":
            return None  # RHV-M, or a CEInfo heartbeat: the full monitor's
        return {"type": KVMGUEST, "guest_name": p.guest_name, "uri": env.uri or DEFAULT_URI,
                "timeout": str(p.timeout("Monitor"))}  # fmt: skip

    def oneshot_monitor(self, recipe: dict[str, str]) -> MonitorResult:
        # The OCF monitor's lean probe (libvirt and the state table only), whose answers
        # the tests compare with the full monitor's.
        from kvmguest.agents.kvmguest.fastmon import probe
        from kvmguest.deadline import Deadline

        return probe(recipe["guest_name"], recipe["uri"], Deadline(float(recipe["timeout"])))

    def demo(self, workdir: str | None) -> int:
        from kvmguest.agents.kvmguest.demo import run_demo

        return run_demo(workdir)

    def dr_payload(self, loaded: Loaded, resource: str, system: str | None, path: str) -> str:
        from pathlib import Path

        from kvmguest.agents.kvmguest.dr import write_image
        from kvmguest.agents.kvmguest.params import guest_params
        from kvmguest.guest.iso import read_iso
        from kvmguest.guest.payload import to_json

        written = write_image(guest_params(loaded, resource, system), Path(path))
        return to_json(read_iso(written)).strip()  # read back: what the guest will see


AGENT = KVMGuestAgent()

__all__ = ["AGENT", "KVMGUEST", "KVMGuestAgent"]
