"""The OCF parameters of ``ocf:kvmguest:KVMGuest`` and how they map to KVMGuest attributes.

Every KVMGuest attribute is one parameter; an association (CEInfo, RHEVMInfo, DROpts) is
flattened into one parameter per key (``ce_``, ``rhevm_``, ``dr_`` prefixes). The cluster
and system attributes a guest depends on (the libvirt URI of a migration target, its site)
are parameters too, so a resource can be run from its parameters alone — that is what
``kvmguest export pacemaker`` writes, and what the lean monitor path reads. The other way,
``config`` + ``resource`` point at a resource of a main.cf.

Pure: no libvirt, no lark (the lean monitor path imports this module).
"""

from __future__ import annotations

from collections.abc import Mapping

from kvmguest.agents.ocf_interface import (
    DEFAULT_RSCTMP,
    Meta,
    OcfParam,
    attr_value,
    flatten,
    ocf_bool,
    ocf_value,
    read_environ,
    system_pairs,
    template,
)
from kvmguest.agents.ocf_interface import OcfEnv as _OcfEnv
from kvmguest.agents.ocf_interface import param as _p

DEFAULT_URI = "qemu:///system"
# The template every system's libvirt URI is built from unless a system has its own.
DEFAULT_URI_TEMPLATE = "qemu+ssh://{system}/system"

_SYSTEMS_FORMAT = (
    " Written as SYSTEM=VALUE pairs separated by spaces; a system is a Pacemaker node name."
)

PARAMS: tuple[OcfParam, ...] = (
    # -- where the resource is defined -----------------------------------------------
    _p("config", "string", "", "main.cf holding the resource",
       "A VCS main.cf (the kvmguest configuration language). With 'resource', the guest "
       "is the KVMGuest resource of that name in this file, its local values (Attr@system) "
       "resolved for the node the action runs on. Parameters given beside it override the "
       "file's values. Without it, the guest is described by the parameters below."),
    _p("resource", "string", "", "resource name in main.cf",
       "The KVMGuest resource of 'config' that this Pacemaker resource runs.", unique=True),
    _p("hypervisor", "string", DEFAULT_URI, "libvirt URI of this node",
       "The libvirt URI the agent manages the guest through, on the node where the action "
       "runs (as VirtualDomain's 'hypervisor'). Monitor, stop and the no-double-start "
       "checks look at the guest's QEMU process only for a local qemu:///system."),
    # -- the KVMGuest attributes (the seed's type) -------------------------------------
    _p("guest_name", "string", "", "GuestName: the libvirt domain (or RHV-M VM) name",
       "GuestName. The libvirt domain name (KVM) or the VM name in RHV-M (RHEV). Required "
       "unless config and resource are given.", attr="GuestName", unique=True),
    _p("delay_after_guest_online", "integer", "5", "DelayAfterGuestOnline (s)",
       "DelayAfterGuestOnline. Seconds start waits for the guest to be fully up (RHEV: up; "
       "KVM: running). The wait ends as soon as the guest is up: an upper bound, not a "
       "sleep.", attr="DelayAfterGuestOnline"),
    _p("delay_after_guest_offline", "integer", "30", "DelayAfterGuestOffline (s)",
       "DelayAfterGuestOffline. Seconds stop waits for a graceful (ACPI) shutdown before it "
       "forces the guest off; bounded by the stop timeout.", attr="DelayAfterGuestOffline"),
    _p("sync_dir", "string", "", "SyncDir: copy the definition here on stop",
       "SyncDir. Stop copies the guest's persistent definition to SYNCDIR/GUESTNAME.xml, "
       "atomically (temp file, fsync, rename), so that a peer can define it. A copy failure "
       "is a warning: the guest is still stopped.", attr="SyncDir"),
    _p("guest_config_file_path", "string", "", "GuestConfigFilePath: domain XML file",
       "GuestConfigFilePath. A libvirt domain XML file; start defines the guest from it when "
       "it is not defined on this node. Its <name> must equal GuestName. Put it where every "
       "node sees it (shared storage).", attr="GuestConfigFilePath"),
    _p("resync_vm_cfg", "boolean", "false", "ResyncVMCfg: redefine when the file changed",
       "ResyncVMCfg. With true, start redefines the guest from GuestConfigFilePath when the "
       "file changed since it was defined. A running guest is never redefined.",
       attr="ResyncVMCfg"),
    _p("ce_enabled", "boolean", "false", "CEInfo.Enabled: heartbeat a control entity",
       "CEInfo.Enabled. With true, every monitor also checks that the libvirt of system "
       "ce_system answers (the heartbeat of the control entity that also tracks the guest).",
       attr="CEInfo", key="Enabled"),
    _p("ce_system", "string", "", "CEInfo.CESystem: the control entity's system",
       "CEInfo.CESystem. The system (node) whose libvirt is the control entity; its URI comes "
       "from libvirt_uris or libvirt_uri_template.", attr="CEInfo", key="CESystem"),
    _p("ce_fault_on_hb_loss", "boolean", "true", "CEInfo.FaultOnHBLoss",
       "CEInfo.FaultOnHBLoss. On heartbeat loss, true reports the guest not running (7: "
       "Pacemaker recovers it), false reports it degraded (190: the operator decides).",
       attr="CEInfo", key="FaultOnHBLoss"),
    _p("rhevm_enabled", "boolean", "false", "RHEVMInfo.Enabled: manage through RHV-M",
       "RHEVMInfo.Enabled. false: a KVM guest managed through libvirt; true: a VM managed "
       "through the RHV-M REST API.", attr="RHEVMInfo", key="Enabled"),
    _p("rhevm_url", "string", "", "RHEVMInfo.URL (https only)",
       "RHEVMInfo.URL. The RHV-M URL for the REST API, https only, for example "
       "https://rhevm-server.example.com:443.", attr="RHEVMInfo", key="URL"),
    _p("rhevm_user", "string", "", "RHEVMInfo.User",
       "RHEVMInfo.User. The RHV-M user the agent logs in as, for example admin@internal.",
       attr="RHEVMInfo", key="User"),
    _p("rhevm_password", "string", "", "RHEVMInfo.Password (ciphertext)",
       "RHEVMInfo.Password. The password of User, encrypted with 'kvmguest encrypt' (never "
       "the clear text).", attr="RHEVMInfo", key="Password"),
    _p("rhevm_cluster", "string", "", "RHEVMInfo.Cluster",
       "RHEVMInfo.Cluster. The RHV-M cluster that this node's RHV host is a member of.",
       attr="RHEVMInfo", key="Cluster"),
    _p("rhevm_use_manual_fencing", "boolean", "false", "RHEVMInfo.UseManualRHEVMFencing",
       "RHEVMInfo.UseManualRHEVMFencing. With true, a crashed RHV host is confirmed as "
       "rebooted (manual fencing) before its VM is started elsewhere.",
       attr="RHEVMInfo", key="UseManualRHEVMFencing"),
    _p("dr_configure_network", "boolean", "false", "DROpts.ConfigureNetwork",
       "DROpts.ConfigureNetwork. With true, start hands the guest this site's network "
       "parameters (the dr_ parameters) on a CD-ROM, and the guest is never migrated to a "
       "node of another site (see 'sites').", attr="DROpts", key="ConfigureNetwork"),
    _p("dr_ipaddress", "string", "", "DROpts.IPAddress",
       "DROpts.IPAddress. The IP address the guest takes at this site after a cross-site "
       "failover.", attr="DROpts", key="IPAddress"),
    _p("dr_netmask", "string", "", "DROpts.Netmask",
       "DROpts.Netmask. The netmask (or prefix length) at this site.",
       attr="DROpts", key="Netmask"),
    _p("dr_gateway", "string", "", "DROpts.Gateway",
       "DROpts.Gateway. The default gateway at this site.", attr="DROpts", key="Gateway"),
    _p("dr_dns_servers", "string", "", "DROpts.DNSServers",
       "DROpts.DNSServers. The DNS servers at this site, separated by spaces.",
       attr="DROpts", key="DNSServers"),
    _p("dr_dns_search_path", "string", "", "DROpts.DNSSearchPath",
       "DROpts.DNSSearchPath. The DNS search domains at this site, separated by spaces.",
       attr="DROpts", key="DNSSearchPath"),
    _p("dr_device", "string", "", "DROpts.Device",
       "DROpts.Device. The guest NIC that takes the address (for example eth0); unset: the "
       "first one.", attr="DROpts", key="Device"),
    # -- the cluster and system attributes a guest depends on ----------------------------
    _p("libvirt_uri_template", "string", DEFAULT_URI_TEMPLATE,
       "libvirt URI of another node ({system} or %n: its name)",
       "Cluster attribute LibvirtURITemplate: the libvirt URI of a node that has none in "
       "libvirt_uris; {system} (or %n, as in VirtualDomain's remoteuri) is replaced by the "
       "node name. Used for the migration target, the CEInfo heartbeat and guestmigrated.",
       cluster_attr="LibvirtURITemplate"),
    _p("migrate_data_uri_template", "string", "",
       "migration data URI of a target node ({system} or %n)",
       "Cluster attribute MigrateDataURITemplate: where the migration data for a guest "
       "moving to a node goes (for example tcp://{system}-mig or unix:///srv/mig/%n.sock); "
       "empty lets libvirt choose.", cluster_attr="MigrateDataURITemplate"),
    _p("libvirt_uris", "string", "", "libvirt URI of each node (SYSTEM=URI ...)",
       "System attribute LibvirtURI, for the nodes whose URI does not follow "
       "libvirt_uri_template." + _SYSTEMS_FORMAT, system_attr="LibvirtURI"),
    _p("migrate_data_uris", "string", "", "migration data URI of each node (SYSTEM=URI ...)",
       "System attribute MigrateDataURI, for the nodes whose migration data URI does not "
       "follow migrate_data_uri_template." + _SYSTEMS_FORMAT, system_attr="MigrateDataURI"),
    _p("sites", "string", "", "DR site of each node (SYSTEM=SITE ...)",
       "System attribute Site. A guest with dr_configure_network=true is never migrated "
       "to a node of another site." + _SYSTEMS_FORMAT, system_attr="Site"),
    _p("rhev_hosts", "string", "", "RHV host of each node (SYSTEM=HOST ...)",
       "System attribute RHEVHost: the RHV host (name or address) that a node is in "
       "rhevm_cluster; unset: the node name." + _SYSTEMS_FORMAT, system_attr="RHEVHost"),
    _p("rhevm_ca_file", "string", "", "CA bundle that verifies RHV-M",
       "Cluster attribute RHEVMCAFile; empty: KVMGUEST_RHEVM_CAFILE, then the system trust "
       "store.", cluster_attr="RHEVMCAFile"),
    _p("dr_payload_dir", "string", "/var/lib/kvmguest/dr", "where start writes DR payloads",
       "Cluster attribute DRPayloadDir: the directory where start writes the guest's DR "
       "network payload image (GUESTNAME.iso) when dr_configure_network is true.",
       cluster_attr="DRPayloadDir"),
    _p("secret_key_file", "string", "", "key that decrypts rhevm_password",
       "Cluster attribute SecretKeyFile; empty: KVMGUEST_KEY_FILE, then "
       "/etc/kvmguest/secret.key.", cluster_attr="SecretKeyFile"),
)  # fmt: skip

BY_NAME: dict[str, OcfParam] = {p.name: p for p in PARAMS}
# The parameters that describe the guest itself (not where its definition is).
ATTR_PARAMS: tuple[OcfParam, ...] = tuple(p for p in PARAMS if p.attr)

# The agent's OCF vocabulary, from one place for its modules and its tests.
__all__ = [
    "ATTR_PARAMS", "BY_NAME", "DEFAULT_RSCTMP", "DEFAULT_URI", "DEFAULT_URI_TEMPLATE", "PARAMS",
    "Meta", "OcfEnv", "OcfParam", "attr_value", "flatten_attrs", "from_environ", "ocf_bool",
    "ocf_value", "system_pairs", "template",
]  # fmt: skip


class OcfEnv(_OcfEnv):
    """One invocation of ocf:kvmguest:KVMGuest."""

    __slots__ = ()
    table = BY_NAME


def from_environ(environ: Mapping[str, str]) -> OcfEnv:
    """Read one invocation's environment. Raises OcfError for unknown or malformed input."""
    env = read_environ(environ, OcfEnv, "KVMGuest")
    assert isinstance(env, OcfEnv)
    return env


def flatten_attrs(attrs: Mapping[str, object]) -> dict[str, str]:
    """KVMGuest attribute values (raw, as in a main.cf block) -> OCF parameters.

    Only what ``attrs`` holds is returned; an association gives one parameter per key it
    holds. Statics and unknown attributes are left out (the caller reports them).
    """
    return flatten(attrs, ATTR_PARAMS)
