"""The type this agent implements (a leaf: the agent's modules import it, not agent.py)."""

KVMGUEST = "KVMGuest"
