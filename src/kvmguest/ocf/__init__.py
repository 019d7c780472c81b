"""The Pacemaker adapter: the ``ocf:kvmguest:<type>`` resource agents and the export of a
main.cf to a Pacemaker configuration.

This package's ``__init__`` imports nothing on purpose: ``python -m kvmguest.ocf monitor``
runs on every monitor interval of every guest, and its cost is what it imports
(docs/pacemaker.md, "The monitor path").
"""
