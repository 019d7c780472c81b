"""Critical in the daemon (VCS): a FAULTED resource's parents are taken offline, and the
group faults only through a critical resource. In-process on test:///default, whose guests
this test destroys behind the daemon's back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import libvirt
from kvmguest.agents.kvmguest.runner import Env
from kvmguest.agents.loader import Loaded
from kvmguest.daemon.engine import Engine
from kvmguest.daemon.service import AgentOptions, Service
from kvmguest.daemon.store import Store
from kvmguest.framework.decision import State

NAMES = ("kvmg-crit-app", "kvmg-crit-disk", "kvmg-crit-log")
MAIN_CF = """\
cluster c ( )
system host1 ( )
group g ( SystemList = { host1 = 0 } )
    KVMGuest app ( GuestName = kvmg-crit-app
        GuestConfigFilePath = "DIR/kvmg-crit-app.xml"
        MonitorInterval = 1 )
    KVMGuest disk ( GuestName = kvmg-crit-disk
        GuestConfigFilePath = "DIR/kvmg-crit-disk.xml"
        MonitorInterval = 1
        Critical = 0 )
    KVMGuest log ( GuestName = kvmg-crit-log
        GuestConfigFilePath = "DIR/kvmg-crit-log.xml"
        MonitorInterval = 1
        Critical = 0 )
    app requires disk
"""


def _domain(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")  # fmt: skip


def test_a_fault_takes_parents_offline_and_faults_the_group_only_through_a_critical_one(
    tmp_path: Path,
) -> None:
    for name in NAMES:
        (tmp_path / f"{name}.xml").write_text(_domain(name))
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF.replace("DIR", str(tmp_path)))
    store = Store(tmp_path / "state.db")
    conn = libvirt.open("test:///default")

    async def main() -> None:
        env = Env(str(cfg), "host1", "test:///default")
        engine = Engine(Loaded.from_file(str(cfg)), env, store)
        service = Service(engine, AgentOptions(env=env, socket=str(tmp_path / "s")))
        await engine.start()
        runner = asyncio.ensure_future(engine.run())

        async def wait(res: str, state: State) -> None:
            r = engine.resource(res)
            assert await engine.wait_for(r, lambda s: s is state, 30) is state

        async def quiet(msg: str) -> None:
            pass

        try:
            for res in ("app", "disk", "log"):
                await wait(res, State.OFFLINE)
            assert (await service.group_online("g", quiet))["ok"]
            # log: not critical, nothing requires it: its fault leaves the group running.
            conn.lookupByName("kvmg-crit-log").destroy()
            await wait("log", State.FAULTED)
            assert service.status(None)["groups"]["g"] == "PARTIAL"
            assert engine.resource("app").machine.state is State.ONLINE
            # disk: not critical, but app (critical) requires it: app is taken offline,
            # and the group faults.
            conn.lookupByName("kvmg-crit-disk").destroy()
            await wait("disk", State.FAULTED)
            await wait("app", State.OFFLINE)
            assert service.status(None)["groups"]["g"].startswith("FAULTED")
        finally:
            await engine.stop(grace=5)
            runner.cancel()

    try:
        asyncio.run(main())
    finally:
        store.close()
        for dom in conn.listAllDomains():
            if dom.name() in NAMES:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()
