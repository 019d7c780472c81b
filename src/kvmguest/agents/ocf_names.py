"""The names of the OCF environment, apart from the interface that reads it: what an
agent's quickest monitor path needs to read its parameters without importing
:mod:`kvmguest.agents.ocf_interface` (its enums cost every monitor ~3 ms)."""

from __future__ import annotations

RESKEY = "OCF_RESKEY_"
META = "OCF_RESKEY_CRM_meta_"
# Set by Pacemaker for every action; not a parameter of ours.
IGNORED_RESKEYS = frozenset({"crm_feature_set"})
# OCF exit codes a quick monitor answers with (the interface's Ocf enum has them all).
SUCCESS, NOT_RUNNING = 0, 7
