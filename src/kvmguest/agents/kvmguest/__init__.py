"""The KVMGuest agent: KVM guests through libvirt, RHEV/oVirt VMs through the RHV-M REST
API (the seed's type). Importing this package registers the agent and imports no driver."""

from kvmguest.agents.kvmguest.agent import AGENT as AGENT
from kvmguest.agents.registry import register

register(AGENT)
