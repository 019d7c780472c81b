"""Routing of ``/ovirt-engine/api/...`` requests (already authenticated) to the engine."""

from __future__ import annotations

from . import xmlio
from .model import ApiFault, Engine, Host, bad_request, not_found
from .xmlio import XML_TYPE, fault_xml

__all__ = ["XML_TYPE", "fault_xml", "handle"]

_VM_ACTIONS = frozenset({"start", "shutdown", "stop", "migrate"})


def handle(
    engine: Engine, method: str, sub: str, query: dict[str, list[str]], body: bytes
) -> tuple[int, bytes]:
    """Status and XML body for ``method`` on ``sub`` (the path after /ovirt-engine/api)."""
    try:
        return _handle(engine, method, sub, query, body)
    except ApiFault as fault:
        return fault.status, fault_xml(fault)


def _q(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _case_sensitive(query: dict[str, list[str]]) -> bool:
    return (_q(query, "case_sensitive") or "true").lower() != "false"


def _host(engine: Engine, ref: xmlio.HostRef | None) -> Host | None:
    if ref is None:
        return None
    try:
        return engine.resolve_host(ref.id, ref.name)
    except ApiFault:
        # A host named in a body that does not exist is a bad request, not a missing URL.
        raise bad_request(f"Host {ref.id or ref.name} does not exist") from None


def _method_not_allowed() -> ApiFault:
    return ApiFault(405, "Method Not Allowed", "The method is not allowed on this resource")


def _handle(
    engine: Engine, method: str, sub: str, query: dict[str, list[str]], body: bytes
) -> tuple[int, bytes]:
    parts = [p for p in sub.split("/") if p]
    with engine.lock:
        engine.tick()
        if not parts:
            if method != "GET":
                raise _method_not_allowed()
            return 200, xmlio.api_xml()
        collection = parts[0]
        if collection == "vms":
            return _vms(engine, method, parts[1:], query, body)
        if collection == "hosts":
            return _hosts(engine, method, parts[1:], query, body)
        if collection == "clusters":
            return _clusters(engine, method, parts[1:], query)
        if collection == "disks" and len(parts) == 2 and method == "GET":
            for vm in engine.vms.values():
                for d in vm.disks:
                    if d.id == parts[1]:
                        return 200, xmlio.disk_xml(d)
            raise not_found("disk", parts[1])
        raise ApiFault(404, "Not Found", f"No resource at {sub}")


def _vms(
    engine: Engine, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
) -> tuple[int, bytes]:
    if not rest:
        if method != "GET":
            raise _method_not_allowed()
        ids = engine.search("vms", _q(query, "search"), _case_sensitive(query))
        return 200, xmlio.vms_xml(engine, [engine.vms[i] for i in ids])
    vm = engine.vm(rest[0])
    if len(rest) == 1:
        if method == "GET":
            return 200, xmlio.vm_element_bytes(engine, vm)
        if method == "PUT":
            update = xmlio.parse_vm_update(body)
            engine.update_vm(vm.id, update.payloads, update.affinity)
            return 200, xmlio.vm_element_bytes(engine, vm)
        raise _method_not_allowed()
    if len(rest) == 2 and rest[1] == "diskattachments" and method == "GET":
        follow = (_q(query, "follow") or "").split(",")
        return 200, xmlio.disk_attachments_xml(vm, "disk" in follow)
    if len(rest) == 2 and rest[1] in _VM_ACTIONS:
        if method != "POST":
            raise _method_not_allowed()
        action = xmlio.parse_action(body)
        host = _host(engine, action.host)
        if rest[1] == "start":
            engine.start(vm.id, host)
        elif rest[1] == "shutdown":
            engine.shutdown(vm.id)
        elif rest[1] == "stop":
            engine.stop(vm.id)
        else:
            engine.migrate(vm.id, host, action.force)
        return 200, xmlio.action_xml()
    raise ApiFault(404, "Not Found", f"No resource at vms/{'/'.join(rest)}")


def _hosts(
    engine: Engine, method: str, rest: list[str], query: dict[str, list[str]], body: bytes
) -> tuple[int, bytes]:
    if not rest:
        if method != "GET":
            raise _method_not_allowed()
        ids = engine.search("hosts", _q(query, "search"), _case_sensitive(query))
        return 200, xmlio.hosts_xml([engine.hosts[i] for i in ids])
    host = engine.host(rest[0])
    if len(rest) == 1 and method == "GET":
        return 200, xmlio.to_bytes(xmlio.host_element(host))
    if len(rest) == 2 and rest[1] == "fence" and method == "POST":
        engine.fence(host.id, xmlio.parse_action(body).fence_type)
        return 200, xmlio.action_xml()
    raise ApiFault(404, "Not Found", f"No resource at hosts/{'/'.join(rest)}")


def _clusters(
    engine: Engine, method: str, rest: list[str], query: dict[str, list[str]]
) -> tuple[int, bytes]:
    if method != "GET" or len(rest) > 1:
        raise ApiFault(404, "Not Found", f"No resource at clusters/{'/'.join(rest)}")
    if not rest:
        ids = engine.search("clusters", _q(query, "search"), _case_sensitive(query))
        return 200, xmlio.clusters_xml([(i, engine.clusters[i].name) for i in ids])
    c = engine.cluster(rest[0])
    return 200, xmlio.to_bytes(xmlio.cluster_element(c.id, c.name))
