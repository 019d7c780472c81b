"""The errors an entry point reports. Each carries a one-line, operator-facing reason."""

from __future__ import annotations


class AgentError(Exception):
    """An entry point could not do its job; the message is the one-line reason."""


class ConfigError(AgentError):
    """The configuration (main.cf, a guest XML file, an attribute value) is wrong."""


class Unreachable(AgentError):
    """The hypervisor or manager could not be reached or did not answer in time.

    A monitor that meets this reports UNKNOWN, never OFFLINE: a failover started on a
    guess may start the guest twice.
    """


class NotAllowed(AgentError):
    """The request is refused by policy (pinned VM, DR guest across sites, unknown action)."""
