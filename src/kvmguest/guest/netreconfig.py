"""kvmguest-net-reconfig: apply the DR site's network parameters inside the guest.

At boot (``kvmguest-net-reconfig.service``, before the network services start) it looks for
the CD-ROM the KVMGuest agent attached, reads the payload, and makes the guest use the
site's address, default route and DNS: at once through netlink, and persistently through
the network backend the guest uses. See docs/disaster-recovery.md.

Exit codes (:class:`ExitCode`): 0 applied or nothing to change; 1 unexpected error; 2 usage;
3 no payload found; 4 payload corrupt or invalid; 5 payload of an unsupported version;
6 network device not found; 7 some change failed. With 3, 4, 5 and 6 nothing was changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import logging
import os
import pkgutil
import shutil
import sys
import time
from collections.abc import Sequence

from kvmguest.guest import backends, command, iso, plan, resolver, source, system
from kvmguest.guest.netlink import NetOps, open_netops
from kvmguest.guest.payload import (
    VOLUME_LABEL,
    DrPayload,
    PayloadError,
    PayloadMissingError,
    UnsupportedVersionError,
)

PROG = "kvmguest-net-reconfig"
UNIT_NAME = "kvmguest-net-reconfig.service"
log = logging.getLogger(PROG)


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NO_PAYLOAD = 3
    INVALID_PAYLOAD = 4
    UNSUPPORTED_VERSION = 5
    NO_DEVICE = 6
    APPLY_FAILED = 7


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Apply the site network parameters from the kvmguest DR CD-ROM.",
        epilog="Exit codes: 0 done or nothing to change, 1 unexpected error, 2 usage, "
        "3 no payload, 4 corrupt or invalid payload, 5 unsupported payload version, "
        "6 device not found, 7 a change failed. With 3-6 nothing was changed.",
    )
    parser.add_argument(
        "--source",
        metavar="DEVICE_OR_ISO",
        help="read the payload from this device, ISO image or mounted directory "
        "instead of looking for the CD-ROM by its label",
    )
    parser.add_argument("--label", default=VOLUME_LABEL, help="volume label to look for")
    parser.add_argument(
        "--backend",
        choices=("auto", *backends.BACKENDS),
        default="auto",
        help="persistent configuration to write (default: detected)",
    )
    parser.add_argument(
        "--resolver",
        choices=("auto", "resolved", "file", "none"),
        default="auto",
        help="how to set DNS: resolvectl, /etc/resolv.conf, or not at all "
        "(default: resolved where it runs, else the file)",
    )
    parser.add_argument(
        "--root", default="/", help="directory holding the guest's files (default: /)"
    )
    parser.add_argument("--state-file", help=f"default: ROOT{system.STATE_FILE}")
    parser.add_argument("--netlink", choices=("auto", "pyroute2", "ip"), default="auto")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the changes and change nothing"
    )
    parser.add_argument(
        "--wait-source",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if no medium is found, let udev settle for up to this long and look again",
    )
    parser.add_argument(
        "--wait-device",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for the network device to appear",
    )
    parser.add_argument(
        "--print-unit",
        action="store_true",
        help="print the systemd unit that runs this at boot, and exit",
    )
    parser.add_argument("--dev-dir", default="/dev", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


class _JournalFormatter(logging.Formatter):
    """Under systemd, prefix the syslog priority so the journal keeps the level."""

    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 3)}>{record.getMessage()}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal():
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def _stderr_is_journal() -> bool:
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
        return bool(device) and (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- payload


def read_payload(args: argparse.Namespace) -> DrPayload:
    """Find and read the payload; PayloadMissingError when there is none."""
    if args.source:
        log.info("reading the payload from %s", args.source)
        return iso.read_source(args.source)
    device = source.find_labelled(args.label, args.dev_dir)
    if device is None and source.settle_udev(args.wait_source):
        device = source.find_labelled(args.label, args.dev_dir)
    if device is not None:
        log.info("found the medium labelled %s at %s", args.label, device)
        return iso.read_source(device)
    refused: PayloadError | None = None
    for candidate in source.unlabelled_media(args.label, args.dev_dir):
        try:
            payload = iso.read_iso(candidate)
        except (ImportError, PayloadMissingError, iso.UnreadableMediumError) as exc:
            log.debug("skipping %s: %s", candidate, exc)
            continue  # some other disc
        except PayloadError as exc:
            # Not our label, so perhaps not ours at all: a later disc may still hold the
            # payload. Only when none does is this bad one the answer.
            log.warning("skipping %s, its payload is refused: %s", candidate, exc)
            refused = refused or exc
            continue
        log.info("found the payload on %s (volume label is not %s)", candidate, args.label)
        return payload
    if refused is not None:
        raise refused
    raise PayloadMissingError(f"no medium labelled {args.label} and no payload on any CD-ROM")


def _wait_for_device(
    ops: NetOps, wanted: str | None, timeout: float
) -> tuple[plan.NetSnapshot, str | None]:
    deadline = time.monotonic() + timeout
    while True:
        snapshot = ops.snapshot()
        device = plan.pick_device(wanted, snapshot)
        if device is not None or time.monotonic() >= deadline:
            return snapshot, device
        time.sleep(0.2)


# --------------------------------------------------------------------------- run


@dataclasses.dataclass
class _Plan:
    device: str
    files: list[plan.FileAction]
    dns: list[resolver.ResolvedAction]
    net: list[plan.NetAction]
    state: plan.AppliedState
    state_changed: bool
    new_originals: dict[str, plan.Original]

    @property
    def changes(self) -> list[str]:
        return plan.describe_all([*self.files, *self.dns, *self.net])


def _make_plan(
    args: argparse.Namespace,
    payload: DrPayload,
    device: str,
    snapshot: plan.NetSnapshot,
    previous: plan.AppliedState | None,
    resolved: resolver.ResolvedCtl,
) -> _Plan:
    root = args.root
    backend = args.backend
    if backend == "auto":
        backend = backends.detect_backend(system.gather_facts(root, device))
        log.debug("detected network backend: %s", backend)
    mode = _resolver_mode(args, previous)
    managed = dict(previous.files) if previous is not None else {}
    # The main ifupdown file is edited from its original, so the edit is stable.
    original_main = managed.get(backends.IFUPDOWN_MAIN)
    if original_main is not None:
        main_text = original_main.content if original_main.kind == "file" else None
    else:
        main_text = system.read_text(root, backends.IFUPDOWN_MAIN)
    desired = backends.render_backend(backend, payload, device, main_text)
    resolv = backends.render_resolv_conf(payload) if mode == "file" else None
    if resolv is not None:
        desired[backends.RESOLV_CONF] = resolv
    current = system.read_current(root, set(desired) | set(managed))
    file_actions, now_managed = plan.plan_files(desired, managed, current)
    dns_actions: list[resolver.ResolvedAction] = []
    if mode == "resolved":
        try:
            current_dns = resolved.current(device)
        except OSError as exc:
            log.warning("cannot read the DNS of %s from resolved: %s", device, exc)
            current_dns = resolver.LinkDns()
        dns_actions = resolver.plan_resolved(payload, device, previous, current_dns)
    state = plan.AppliedState(
        device=device,
        ip_address=payload.ip_address,
        prefix_length=payload.prefix_length,
        gateway=payload.gateway,
        dns_servers=payload.dns_servers,
        dns_search=payload.dns_search,
        backend=backend,
        resolver=mode,
        site=payload.site,
        files=now_managed,
    )
    state_path = _state_path(args)
    return _Plan(
        device=device,
        files=file_actions,
        dns=dns_actions,
        net=plan.plan_network(payload, device, snapshot, previous),
        state=state,
        state_changed=system.state_text(state_path) != plan.state_to_json(state),
        new_originals={p: o for p, o in now_managed.items() if p not in managed},
    )


def _resolver_mode(args: argparse.Namespace, previous: plan.AppliedState | None) -> str:
    """resolved where it runs; else the file, unless something else owns it (a symlink)."""
    if args.resolver != "auto":
        return str(args.resolver)
    if system.resolved_running(args.root):
        return "resolved"
    ours = previous is not None and backends.RESOLV_CONF in previous.files
    if not ours and system.is_symlink(args.root, backends.RESOLV_CONF):
        # systemd-resolved not started yet, resolvconf, NetworkManager...: replacing their
        # link would cut them off; the backend's file hands them the servers instead.
        log.info(
            "%s is a symlink: DNS is left to what manages it, through the backend's file",
            backends.RESOLV_CONF,
        )
        return "none"
    return "file"


def _state_path(args: argparse.Namespace) -> str:
    return str(args.state_file or system.under(args.root, system.STATE_FILE))


def _load_previous(path: str) -> plan.AppliedState | None:
    try:
        return system.load_state(path)
    except (OSError, ValueError) as exc:
        # Refusing to configure the network after a failover would be worse than possibly
        # leaving an address of an earlier site behind.
        log.warning("ignoring the unreadable state file %s: %s", path, exc)
        return None


def _notify_backend(backend: str, device: str) -> None:
    """Let a running network service pick up the rewritten files (not at boot: not running)."""
    commands: list[list[str]] = []
    if backend == "networkmanager" and os.path.exists("/run/NetworkManager/NetworkManager.pid"):
        name = backends.connection_id(device)
        commands = [["nmcli", "connection", "reload"], ["nmcli", "connection", "up", name]]
    elif backend == "networkd" and os.path.exists("/run/systemd/netif/state"):
        commands = [["networkctl", "reload"], ["networkctl", "reconfigure", device]]
    if commands and not shutil.which(commands[0][0]):
        log.warning("backend: %s is not installed; changes apply at next boot", commands[0][0])
        return
    run_backend_commands(commands)


def run_backend_commands(commands: Sequence[Sequence[str]]) -> None:
    """Run each command, logging its failure (a timeout too) and going on with the next."""
    for argv in commands:
        status, output = command.runner(argv)
        if status == 0:
            log.info("backend: %s", " ".join(argv))
        else:
            log.warning("backend: %s failed: %s", " ".join(argv), output or f"exit {status}")


def _apply(
    args: argparse.Namespace,
    todo: _Plan,
    previous: plan.AppliedState | None,
    ops: NetOps,
    resolved: resolver.ResolvedCtl,
) -> int:
    state_path = _state_path(args)
    if todo.new_originals:
        # Record what we are about to overwrite before overwriting it: a crash in between
        # must not lose the guest's original configuration.
        base = previous if previous is not None else todo.state
        merged = plan.merged_files(base.files, todo.new_originals)
        try:
            system.save_state(state_path, dataclasses.replace(base, files=merged))
        except OSError as exc:
            log.error(
                "cannot record the original files in %s, nothing changed: %s", state_path, exc
            )
            return ExitCode.APPLY_FAILED
    failed = 0
    for file_action in todo.files:
        try:
            system.apply_file_action(args.root, file_action)
            log.info("%s", file_action.describe())
        except OSError as exc:
            failed += 1
            log.error("%s: failed: %s", file_action.describe(), exc)
    for dns_action in todo.dns:
        try:
            resolved.apply(dns_action)
            log.info("%s", dns_action.describe())
        except OSError as exc:
            failed += 1
            log.error("%s: failed: %s", dns_action.describe(), exc)
    for net_action in todo.net:
        try:
            ops.apply(net_action)
            log.info("%s", net_action.describe())
        except OSError as exc:
            failed += 1
            log.error("%s: failed: %s", net_action.describe(), exc)
    if todo.files and os.path.realpath(args.root) == "/":
        _notify_backend(todo.state.backend, todo.device)
    # Written even after a failure: the next run compares with the real state again, and
    # needs to know which files are ours.
    if todo.state_changed or todo.new_originals:
        try:
            system.save_state(state_path, todo.state)
            log.debug("state saved to %s", state_path)
        except OSError as exc:
            failed += 1
            log.error("cannot save the state to %s: %s", state_path, exc)
    return ExitCode.APPLY_FAILED if failed else ExitCode.OK


def run(args: argparse.Namespace) -> int:
    try:
        payload = read_payload(args)
    except PayloadMissingError as exc:
        log.info("no DR payload, nothing changed: %s", exc)
        return ExitCode.NO_PAYLOAD
    except UnsupportedVersionError as exc:
        log.error("payload refused, nothing changed: %s", exc)
        return ExitCode.UNSUPPORTED_VERSION
    except PayloadError as exc:
        log.error("payload refused, nothing changed: %s", exc)
        return ExitCode.INVALID_PAYLOAD
    log.info(
        "payload of site %s: %s dev %s gateway %s dns %s search %s",
        payload.site or "-",
        payload.cidr,
        payload.device or "(first NIC)",
        payload.gateway or "-",
        " ".join(payload.dns_servers) or "-",
        " ".join(payload.dns_search) or "-",
    )
    ops = open_netops(args.netlink)
    try:
        try:
            snapshot, device = _wait_for_device(ops, payload.device, args.wait_device)
        except OSError as exc:  # ip timed out, or netlink refused
            log.error("cannot read the network configuration, nothing changed: %s", exc)
            return ExitCode.ERROR
        if device is None:
            what = f"device {payload.device}" if payload.device else "network device"
            log.error("no %s found, nothing changed", what)
            return ExitCode.NO_DEVICE
        previous = _load_previous(_state_path(args))
        resolved = resolver.ResolvedCtl()
        todo = _make_plan(args, payload, device, snapshot, previous, resolved)
        changes = todo.changes
        if todo.state_changed:
            changes.append(f"file write {_state_path(args)} (state)")
        if not changes:
            log.info("nothing to change: %s already has the site configuration", device)
            return ExitCode.OK
        if args.dry_run:
            for change in changes:
                print(f"would: {change}")
            log.info("dry run: %d changes not made", len(changes))
            return ExitCode.OK
        code = _apply(args, todo, previous, ops, resolved)
        if code == ExitCode.OK:
            log.info("site configuration applied to %s (%d changes)", device, len(changes))
        else:
            log.error("site configuration of %s incomplete: see the failures above", device)
        return code
    finally:
        ops.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_unit:
        # pkgutil reads package data from a wheel install and from the zipapp bundle alike.
        unit = pkgutil.get_data("kvmguest.guest", UNIT_NAME)
        if unit is None:
            print(f"{PROG}: {UNIT_NAME} is not installed with this copy", file=sys.stderr)
            return ExitCode.ERROR
        sys.stdout.write(unit.decode("utf-8"))
        return ExitCode.OK
    _setup_logging(args.verbose)
    try:
        return run(args)
    except KeyboardInterrupt:
        return ExitCode.ERROR
    except Exception as exc:
        log.error("unexpected error: %s", exc, exc_info=args.verbose)
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
