"""Test doubles that speak the real protocols (an oVirt Engine API simulator, ...).

Nothing here is used by the agent at run time; tests and operators who want to try
kvmguest without the real infrastructure use it.
"""
