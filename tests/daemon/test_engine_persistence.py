"""What a SIGKILL may cut: the engine's writes, in the order a restart depends on.

The daemon is killed at arbitrary moments (tests/daemon/test_daemon_real.py does it on real
guests). The history is what an operator reads to learn what the daemon promised; the
snapshot is what a restarted daemon resumes from. So at every history row, the snapshot on
disk must already hold the state that row tells of. Run here on test:///default, with a
store that checks this at each history write.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import libvirt
from kvmguest.agents.kvmguest.runner import Env
from kvmguest.agents.loader import Loaded
from kvmguest.daemon.engine import Engine
from kvmguest.daemon.store import Store
from kvmguest.framework.decision import State

MAIN_CF = """\
cluster c ( )
system host1 ( )
group g ( SystemList = { host1 = 0 } )
    KVMGuest web (
        GuestName = kvmg-persist-web
        GuestConfigFilePath = "XML"
        OfflineMonitorInterval = 10
        )
"""
DOMAIN = (
    "<domain type='test'><name>kvmg-persist-web</name><memory unit='MiB'>64</memory>"
    "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
)


class CheckingStore(Store):
    """Records, at each history row, what a restart would have found on disk."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.seen: list[tuple[str, str, dict[str, Any] | None]] = []

    def record(self, resource: str, kind: str, detail: str, ts: float | None = None) -> None:
        if resource != "-":
            self.seen.append((kind, detail, self.load_snapshots().get(resource)))
        super().record(resource, kind, detail, ts)


def test_a_request_row_is_written_only_after_its_intent_is_durable(tmp_path: Path) -> None:
    xml = tmp_path / "web.xml"
    xml.write_text(DOMAIN)
    cfg = tmp_path / "main.cf"
    cfg.write_text(MAIN_CF.replace("XML", str(xml)))
    store = CheckingStore(tmp_path / "state.db")

    async def main() -> None:
        engine = Engine(Loaded.from_file(str(cfg)), Env(str(cfg), "host1", "test:///default"),
                        store)  # fmt: skip
        await engine.start()
        runner = asyncio.ensure_future(engine.run())
        r = engine.resource("web")
        try:
            await engine.wait_for(r, lambda s: s is State.OFFLINE, 30)
            engine.request(r, "online")
            await engine.wait_for(r, lambda s: s is State.ONLINE, 30)
        finally:
            await engine.stop(grace=5)
            runner.cancel()
        assert r.machine.state is State.ONLINE

    try:
        asyncio.run(main())
        rows = store.seen
        request = next(i for i, (k, d, _) in enumerate(rows) if (k, d) == ("request", "online"))
        on_disk = rows[request][2]
        # GOING_ONLINE on disk: a restarted daemon probes and resumes the online.
        assert on_disk is not None and on_disk["state"] == "GOING_ONLINE", on_disk
        # Every state row: the snapshot already holds the state it announces.
        for kind, detail, snap in rows:
            if kind == "state":
                assert snap is not None
                assert detail.endswith("-> " + State[snap["state"]].value), (detail, snap)
    finally:
        store.close()
        conn = libvirt.open("test:///default")
        for dom in conn.listAllDomains():
            if dom.name() == "kvmg-persist-web":
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()
