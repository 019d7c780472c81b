"""``kvmguest demo``: the main job on libvirt's in-process ``test:///default`` driver.

The test driver lives inside this process (no daemon, no root), so the whole story runs
in one process: define and bring a guest online from its XML file, monitor it, crash it
behind the agent's back, see the monitor report OFFLINE, clean it, bring it back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

import libvirt
from kvmguest.agents.kvmguest import entrypoints as ep
from kvmguest.agents.kvmguest.libvirt_kvm import LibvirtKVM
from kvmguest.agents.kvmguest.runner import Env, context
from kvmguest.agents.loader import Loaded
from kvmguest.model.states import MonitorResult

URI = "test:///default"

GUEST_XML = """<domain type='test'>
  <name>demo-vm</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
"""

MAIN_CF = """// kvmguest demo: one system, one failover group, one KVM guest.
cluster demo ( )

system demo-host ( Site = east )

group demo-group (
    SystemList = {{ demo-host = 0 }}
    AutoStartList = {{ demo-host }}
    )

    KVMGuest demo-vm (
        GuestName = demo-vm
        GuestConfigFilePath = "{xml}"
        SyncDir = "{sync}"
        DelayAfterGuestOnline = 5
        DelayAfterGuestOffline = 10
        )
"""


def run_demo(workdir: str | None) -> int:
    console = Console(highlight=False)
    base = Path(workdir or tempfile.mkdtemp(prefix="kvmguest-demo-"))
    (base / "sync").mkdir(parents=True, exist_ok=True)
    xml_path = base / "demo-vm.xml"
    xml_path.write_text(GUEST_XML)
    cfg_path = base / "main.cf"
    cfg_path.write_text(MAIN_CF.format(xml=xml_path, sync=base / "sync"))
    console.print(f"[bold]kvmguest demo[/] on libvirt's {URI} driver; files in {base}\n")

    loaded = Loaded.from_file(str(cfg_path))
    console.print(f"validate {cfg_path}: valid, resources: {', '.join(loaded.cfg.resources)}")
    hv = LibvirtKVM(URI)
    ctx = context(Env(str(cfg_path), "demo-host", URI), "demo-vm", loaded=loaded, hv=hv)

    def show_monitor() -> MonitorResult:
        r = ep.monitor(ctx)
        console.print(f"  monitor  -> exit {r.exit_code}: {r.line('demo-vm')}")
        return r

    def show(step: str, outcome: ep.Outcome) -> bool:
        mark = "[green]ok[/]" if outcome.ok else "[red]FAILED[/]"
        console.print(f"  {step:<8} -> {mark}: {outcome.message}")
        for w in outcome.warnings:
            console.print(f"             warning: {w}")
        return outcome.ok

    console.print("\n[bold]1. bring the guest online[/] (it is not defined yet)")
    show_monitor()
    ok = show("online", ep.online(ctx))
    first = show_monitor()

    console.print("\n[bold]2. the guest crashes[/] (destroyed behind the agent's back)")
    libvirt.open(URI).lookupByName("demo-vm").destroy()
    crashed = show_monitor()

    console.print("\n[bold]3. clean up after the fault, then restart[/]")
    ok &= show("clean", ep.clean(ctx, 4))
    synced = (base / "sync" / "demo-vm.xml").exists()
    console.print(f"  SyncDir  -> {'holds' if synced else 'MISSING'} demo-vm.xml")
    ok &= show("online", ep.online(ctx))
    again = show_monitor()

    console.print("\n[bold]4. take it offline gracefully[/]")
    ok &= show("offline", ep.offline(ctx))
    final = show_monitor()

    good = (
        ok and synced
        and first.exit_code == 110 and crashed.exit_code == 100
        and again.exit_code == 110 and final.exit_code == 100
    )  # fmt: skip
    console.print("\n" + ("[bold green]demo passed[/]" if good else "[bold red]demo failed[/]"))
    return 0 if good else 1
