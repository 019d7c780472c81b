"""The KVMGuest agent's validate hook: the checks of a resource beyond its attributes'
types (GuestName, RHEVMInfo, CEInfo, DROpts), each with its position."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from kvmguest.model.attributes import AttrDef, Typed
from kvmguest.model.config import Block, Config, Diagnostic
from kvmguest.model.excerpt import excerpt
from kvmguest.secrets import looks_encrypted

# Checks of one attribute's whole value, for the attributes whose meaning we know beyond
# their type: (attribute) -> function(value as association) -> list of messages.
AssocCheck = Callable[[dict[str, str]], list[str]]


def _have_ovirt_sdk() -> bool:
    try:
        return importlib.util.find_spec("ovirtsdk4") is not None
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
        return False


def check_rhevminfo(info: dict[str, str]) -> list[str]:
    if info.get("Enabled", "0") != "1":
        return []
    errors: list[str] = []
    url = info.get("URL", "NONE")
    if url in ("", "NONE"):
        errors.append("RHEVMInfo.URL is required when RHEVMInfo.Enabled = 1")
    else:
        errors += _url_errors(url)
    for key in ("User", "Password", "Cluster"):
        if info.get(key, "NONE") in ("", "NONE"):
            errors.append(f"RHEVMInfo.{key} is required when RHEVMInfo.Enabled = 1")
    password = info.get("Password", "NONE")
    if password not in ("", "NONE") and not looks_encrypted(password):
        # Never quote it: it is most likely the password itself.
        errors.append(
            "RHEVMInfo.Password is not encrypted: store the output of "
            "`kvmguest secret encrypt`, never the password itself (docs/rhevm.md)"
        )
    # Debian does not ship the oVirt SDK: the package runs without it, RHEV resources do not.
    if not _have_ovirt_sdk():
        errors.append(
            "RHEVMInfo.Enabled = 1 needs the oVirt SDK: install ovirt-engine-sdk-python "
            "(pip install 'kvmguest[rhevm]'; docs/rhevm.md)"
        )
    return errors


def rhevm_url(url: str) -> SplitResult | None:
    """The RHV-M URL's parts, or None when it cannot be parsed at all (``https://[::1``)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts


def _url_errors(url: str) -> list[str]:
    parts = rhevm_url(url)
    if parts is None:
        return [f"RHEVMInfo.URL {excerpt(url)} is not a well-formed URL"]
    if parts.scheme != "https":
        return [
            f"RHEVMInfo.URL must be https:// (the RHV-M API is only spoken over TLS), "
            f"not {excerpt(url)}"
        ]
    if not parts.hostname:
        return [f"RHEVMInfo.URL {excerpt(url)} has no host name"]
    return []


def identity(values: dict[str, Typed]) -> str | None:
    """What the resource manages on a system: a libvirt domain by name, or an RHV-M VM
    by engine and name (the same VM name on two engines is two VMs)."""
    name = str(values.get("GuestName", ""))
    if not name:
        return None
    info = values.get("RHEVMInfo")
    if isinstance(info, dict) and str(info.get("Enabled")) == "1":
        parts = rhevm_url(str(info.get("URL", "")))
        if parts is None or not parts.hostname:
            return None  # reported by the RHEVMInfo check
        engine = f"{parts.hostname}:{parts.port or 443}{parts.path.rstrip('/')}"
        return f"VM {excerpt(name)} of RHV-M {engine}"
    return f"guest {excerpt(name)}"


def check_ceinfo(info: dict[str, str]) -> list[str]:
    if info.get("Enabled", "0") != "1":
        return []
    if info.get("CESystem", "NONE") in ("", "NONE"):
        return ["CEInfo.CESystem is required when CEInfo.Enabled = 1"]
    return []


def check_dropts(opts: dict[str, str]) -> list[str]:
    try:
        from kvmguest.guest.payload import validate_dropts
    except ImportError:  # the guest package is optional in a trimmed install
        return []
    return validate_dropts(opts)


ASSOC_CHECKS: dict[str, AssocCheck] = {
    "RHEVMInfo": check_rhevminfo,
    "CEInfo": check_ceinfo,
    "DROpts": check_dropts,
}
BOOLEAN_KEYS = {
    "RHEVMInfo": ("Enabled", "UseManualRHEVMFencing"),
    "CEInfo": ("Enabled", "FaultOnHBLoss"),
    "DROpts": ("ConfigureNetwork",),
}


def _systems_of(cfg: Config, block: Block) -> list[str]:
    group = cfg.groups.get(block.group or "")
    sl = group.attrs.get("SystemList") if group else None
    return list(sl) if isinstance(sl, dict) else list(cfg.systems)


def check(cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for attr, keys in BOOLEAN_KEYS.items():
        values = [("", block.attrs.get(attr))]
        values += [(f"{attr}@{s}: ", v) for s, v in block.local.get(attr, {}).items()]
        for where, value in values:
            if not isinstance(value, dict):
                continue
            for key in keys:
                if key in value and value[key] not in ("0", "1"):
                    out.append(Diagnostic(
                        block.position(attr),
                        f"{where}{attr}.{key} must be 0 or 1, not {value[key]!r}",
                    ))  # fmt: skip
    if block.attrs.get("GuestName") in (None, ""):
        local = block.local.get("GuestName", {})
        needed = _systems_of(cfg, block)
        if not needed or any(local.get(s) in (None, "") for s in needed):
            out.append(Diagnostic(block.pos, f"KVMGuest {block.name}: GuestName is required"))
    for attr, assoc_check in ASSOC_CHECKS.items():
        for system in [None, *block.local.get(attr, {})]:
            raw = block.raw(attr, system)
            if not isinstance(raw, dict):
                continue
            merged = dict(attrs[attr].default_value())  # type: ignore[arg-type]
            merged.update(raw)
            where = f"@{system}" if system else ""
            for msg in assoc_check(merged):
                out.append(Diagnostic(block.position(attr), f"KVMGuest {block.name}{where}: {msg}"))
    return out
