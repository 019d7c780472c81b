"""XML of the oVirt Engine API v4, both ways: what the engine sends and what it reads.

Only the elements the agent (through ovirtsdk4's readers and writers) uses are rendered,
with the engine's element names, ``href``/``id`` attributes and ``link`` relations; the
SDK skips elements it does not know, as it does with a real engine's richer documents.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .model import ApiFault, Disk, Engine, Host, Payload, Vm, bad_request

API = "/ovirt-engine/api"
XML_TYPE = "application/xml;charset=UTF-8"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    e = ET.SubElement(parent, tag, attrs)
    if text is not None:
        e.text = text
    return e


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _ref(parent: ET.Element, tag: str, collection: str, ident: str) -> ET.Element:
    return _sub(parent, tag, href=f"{API}/{collection}/{ident}", id=ident)


def to_bytes(root: ET.Element) -> bytes:
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + text).encode()


def fault_xml(fault: ApiFault) -> bytes:
    root = ET.Element("fault")
    _sub(root, "detail", fault.detail)
    _sub(root, "reason", fault.reason)
    return to_bytes(root)


def action_xml() -> bytes:
    # The engine answers a synchronous action with the action itself, marked complete.
    root = ET.Element("action")
    _sub(root, "status", "complete")
    return to_bytes(root)


def api_xml() -> bytes:
    root = ET.Element("api")
    for rel in ("clusters", "disks", "hosts", "vms"):
        _sub(root, "link", href=f"{API}/{rel}", rel=rel)
    info = _sub(root, "product_info")
    _sub(info, "name", "oVirt Engine (kvmguest simulator)")
    _sub(info, "vendor", "ovirt.org")
    version = _sub(info, "version")
    _sub(version, "build", "0")
    _sub(version, "full_version", "4.5.0-simulator")
    _sub(version, "major", "4")
    _sub(version, "minor", "5")
    _sub(version, "revision", "0")
    _sub(root, "time", time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime()))
    return to_bytes(root)


def vm_element(engine: Engine, vm: Vm, parent: ET.Element | None = None) -> ET.Element:
    href = f"{API}/vms/{vm.id}"
    e = (
        ET.Element("vm", href=href, id=vm.id)
        if parent is None
        else _sub(parent, "vm", href=href, id=vm.id)
    )
    actions = _sub(e, "actions")
    for rel in ("migrate", "shutdown", "start", "stop"):
        _sub(actions, "link", href=f"{href}/{rel}", rel=rel)
    _sub(e, "name", vm.name)
    for rel in ("diskattachments", "nics", "statistics"):
        _sub(e, "link", href=f"{href}/{rel}", rel=rel)
    _ref(e, "cluster", "clusters", vm.cluster_id)
    if vm.host_id is not None:
        _ref(e, "host", "hosts", vm.host_id)
    policy = _sub(e, "placement_policy")
    _sub(policy, "affinity", vm.affinity)
    if vm.placement_host_ids:
        hosts = _sub(policy, "hosts")
        for host_id in vm.placement_host_ids:
            _ref(hosts, "host", "hosts", host_id)
    if vm.payloads:
        payloads = _sub(e, "payloads")
        for p in vm.payloads:
            pe = _sub(payloads, "payload")
            files = _sub(pe, "files")
            for name, content in p.files.items():
                fe = _sub(files, "file")
                _sub(fe, "content", content)
                _sub(fe, "name", name)
            _sub(pe, "type", p.type)
    _sub(e, "status", vm.status)
    _sub(e, "type", "server")
    return e


def vm_element_bytes(engine: Engine, vm: Vm) -> bytes:
    return to_bytes(vm_element(engine, vm))


def vms_xml(engine: Engine, vms: list[Vm]) -> bytes:
    root = ET.Element("vms")
    for vm in vms:
        vm_element(engine, vm, root)
    return to_bytes(root)


def host_element(host: Host, parent: ET.Element | None = None) -> ET.Element:
    href = f"{API}/hosts/{host.id}"
    e = (
        ET.Element("host", href=href, id=host.id)
        if parent is None
        else _sub(parent, "host", href=href, id=host.id)
    )
    actions = _sub(e, "actions")
    _sub(actions, "link", href=f"{href}/fence", rel="fence")
    _sub(e, "name", host.name)
    _sub(e, "link", href=f"{href}/vms", rel="vms")
    _sub(e, "address", host.address)
    _ref(e, "cluster", "clusters", host.cluster_id)
    _sub(e, "status", host.status)
    _sub(e, "type", "rhel")
    return e


def hosts_xml(hosts: list[Host]) -> bytes:
    root = ET.Element("hosts")
    for h in hosts:
        host_element(h, root)
    return to_bytes(root)


def cluster_element(cluster_id: str, name: str, parent: ET.Element | None = None) -> ET.Element:
    href = f"{API}/clusters/{cluster_id}"
    e = (
        ET.Element("cluster", href=href, id=cluster_id)
        if parent is None
        else _sub(parent, "cluster", href=href, id=cluster_id)
    )
    _sub(e, "name", name)
    return e


def clusters_xml(clusters: list[tuple[str, str]]) -> bytes:
    root = ET.Element("clusters")
    for cluster_id, name in clusters:
        cluster_element(cluster_id, name, root)
    return to_bytes(root)


def disk_element(disk: Disk, parent: ET.Element) -> ET.Element:
    e = _ref(parent, "disk", "disks", disk.id)
    _sub(e, "alias", disk.name)
    _sub(e, "name", disk.name)
    _sub(e, "format", "cow")
    _sub(e, "provisioned_size", str(disk.provisioned_size))
    _sub(e, "status", disk.status)
    _sub(e, "storage_type", "image")
    return e


def disk_xml(disk: Disk) -> bytes:
    holder = ET.Element("holder")
    return to_bytes(disk_element(disk, holder))


def disk_attachments_xml(vm: Vm, follow_disk: bool) -> bytes:
    root = ET.Element("disk_attachments")
    for d in vm.disks:
        a = _sub(
            root,
            "disk_attachment",
            href=f"{API}/vms/{vm.id}/diskattachments/{d.id}",
            id=d.id,
        )
        _sub(a, "active", _bool(d.active))
        _sub(a, "bootable", _bool(d.bootable))
        _sub(a, "interface", d.interface)
        _sub(a, "pass_discard", "false")
        _sub(a, "read_only", "false")
        _sub(a, "uses_scsi_reservation", "false")
        if follow_disk:
            disk_element(d, a)
        else:
            _ref(a, "disk", "disks", d.id)
        _ref(a, "vm", "vms", vm.id)
    return to_bytes(root)


# -- reading request bodies --------------------------------------------------------------


def parse(body: bytes, root_tag: str) -> ET.Element:
    if not body.strip():
        return ET.Element(root_tag)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise bad_request(f"Request syntactically incorrect: {e}") from None
    if root.tag != root_tag:
        raise bad_request(f"Expected a <{root_tag}> document, got <{root.tag}>")
    return root


def _text(e: ET.Element | None) -> str | None:
    return None if e is None or e.text is None else e.text.strip()


def _flag(e: ET.Element | None) -> bool:
    return (_text(e) or "").lower() == "true"


@dataclass(frozen=True)
class HostRef:
    id: str | None
    name: str | None


def _host_ref(e: ET.Element | None) -> HostRef | None:
    if e is None:
        return None
    return HostRef(e.get("id"), _text(e.find("name")))


@dataclass(frozen=True)
class ActionBody:
    host: HostRef | None  # <action><host> (migrate) or the run-once placement (start)
    force: bool
    fence_type: str | None


def parse_action(body: bytes) -> ActionBody:
    root = parse(body, "action")
    host = _host_ref(root.find("host"))
    if host is None:
        # start: <action><vm><placement_policy><hosts><host id=.../>: run on that host.
        host = _host_ref(root.find("vm/placement_policy/hosts/host"))
    return ActionBody(host, _flag(root.find("force")), _text(root.find("fence_type")))


@dataclass(frozen=True)
class VmUpdate:
    payloads: list[Payload] | None
    affinity: str | None


def parse_vm_update(body: bytes) -> VmUpdate:
    root = parse(body, "vm")
    payloads: list[Payload] | None = None
    pe = root.find("payloads")
    if pe is not None:
        payloads = []
        for p in pe.findall("payload"):
            files: dict[str, str] = {}
            for f in p.findall("files/file"):
                name = _text(f.find("name"))
                if not name:
                    raise bad_request("Payload file requires a name")
                content = f.find("content")
                files[name] = "" if content is None or content.text is None else content.text
            payloads.append(Payload(_text(p.find("type")) or "cdrom", files))
    return VmUpdate(payloads, _text(root.find("placement_policy/affinity")))
