"""The ``kvmguest`` command's entry: ``monitor`` on a lean path, everything else on click.

A one-shot ``kvmguest monitor RES`` is what scripts and monitoring systems run over and
over; its cost is what it imports. This entry reads the monitor's arguments itself (the same
options as the click command, before or after the command name) and answers, in order:

1. from a running agent daemon or Pacemaker companion on this node, which probe the
   resource at once (their answer is as fresh as a direct probe);
2. from the configuration as the full path last validated it (a cache checked against every
   file's inode, mtime, size and content hash), probing through the resource's agent —
   neither click nor lark is imported; once an agent has given the resource's monitor
   recipe (KVMGuest: the guest's name, the libvirt URI, MonitorTimeout), only the recipe is
   read and the agent's lean probe runs, as the OCF monitor's does;
3. otherwise, and for any other command or anything unusual (an unknown option, ``--help``,
   ``-v``, an invalid or changed configuration, an unknown resource), the click CLI, which
   prints the errors and exit codes of the CLI contract and refreshes the cache.
"""

from __future__ import annotations

import os
import sys

AGENT_SOCKET = "/run/kvmguest/agent.sock"
# How long a daemon or companion may take to answer (it probes within the monitor's own
# deadline; past this bound the lean path probes itself).
ASK_BOUND = 10.0
_VALUED = {"-c": "config", "--config": "config", "--connect": "uri", "--system": "system"}


def parse_monitor(argv: list[str]) -> dict[str, str] | None:
    """The options of ``[OPTS] monitor RES [OPTS]``, or None for anything else."""
    out: dict[str, str] = {}
    words: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUED and name.startswith("--") and eq:
            out[_VALUED[name]] = value
        elif arg in _VALUED:
            if i + 1 >= len(argv):
                return None
            out[_VALUED[arg]] = argv[i + 1]
            i += 1
        elif arg == "--json":
            out["json"] = "1"
        elif arg.startswith("-"):
            return None  # -v, --help, --version, a typo: the click CLI's to answer
        else:
            words.append(arg)
        i += 1
    if len(words) != 2 or words[0] != "monitor":
        return None
    out["resource"] = words[1]
    return out


def _print(result: object, resource: str, as_json: bool) -> int:
    from kvmguest.model.states import MonitorResult

    assert isinstance(result, MonitorResult)
    if as_json:
        import json

        # The CLI contract's envelope (docs/cli.md), as the full path writes it.
        sys.stdout.write(json.dumps({**result.as_dict(), "ok": True}) + "\n")
    else:
        sys.stdout.write(result.line(resource) + "\n")
    return result.exit_code


def _ask_running(opts: dict[str, str], config: str, system: str, uri: str) -> int | None:
    from kvmguest.model.states import MonitorResult, ResourceState
    from kvmguest.ocf import companion_client

    request: dict[str, object] = {"cmd": "oneshot-monitor", "config": os.path.abspath(config),
               "resource": opts["resource"], "system": system, "uri": uri}  # fmt: skip
    for path in (
        os.environ.get("KVMGUEST_SOCKET") or AGENT_SOCKET,
        companion_client.socket_path(os.environ),
    ):
        if not os.path.exists(path):
            continue
        reply = companion_client.ask(path, request, ASK_BOUND)
        if not reply or not reply.get("ok") or "state" not in reply:
            continue
        try:
            state = ResourceState(str(reply["state"]))
            result = MonitorResult(state, int(str(reply["confidence"])), str(reply["detail"]))
        except ValueError:
            continue
        return _print(result, opts["resource"], "json" in opts)
    return None


def lean_monitor(opts: dict[str, str]) -> int | None:
    """The monitor's exit code, or None when the full path must answer."""
    from kvmguest.agents import registry
    from kvmguest.agents.host import DEFAULT_CONFIG, DEFAULT_URI, local_system
    from kvmguest.model import config_cache

    config = opts.get("config") or os.environ.get("KVMGUEST_CONFIG") or DEFAULT_CONFIG
    system = local_system(opts.get("system"))
    uri = opts.get("uri") or os.environ.get("KVMGUEST_LIBVIRT_URI") or DEFAULT_URI
    answered = _ask_running(opts, config, system, uri)
    if answered is not None:
        return answered
    res = opts["resource"]
    stamp = registry.code_stamp()
    key = f"{res}\0{system}\0{uri}"
    # 1. The resource's monitor recipe, kept with the validated configuration: the
    #    configuration model is not even loaded.
    recipe = config_cache.lookup_recipe(config, stamp, key)
    agent = registry.get(recipe.get("type", "")) if recipe is not None else None
    if recipe is not None and agent is not None:
        return _print(agent.oneshot_monitor(recipe), res, "json" in opts)
    # 2. The validated configuration itself: bind the resource through its agent (and keep
    #    its recipe for the next time).
    from kvmguest.agents.base import Env, monitor_once
    from kvmguest.agents.loader import Loaded

    loaded = Loaded.cached(config)
    block = loaded.cfg.resources.get(res) if loaded is not None else None
    agent = registry.get(block.kind) if block is not None else None
    if loaded is None or agent is None:
        return None
    env = Env(config, system, uri)
    try:
        recipe = agent.oneshot_recipe(loaded, res, env)
        if recipe is not None:
            config_cache.store_recipe(config, stamp, key, recipe)
            return _print(agent.oneshot_monitor(recipe), res, "json" in opts)
        handle = agent.runtime(env).bind(loaded, res)
    except KeyError:
        return None
    result = monitor_once(handle)
    handle.close()
    return _print(result, res, "json" in opts)


def main() -> None:
    opts = parse_monitor(sys.argv[1:])
    code = lean_monitor(opts) if opts is not None else None
    if code is None:
        from kvmguest.cli.main import main as full

        full()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # at once: a call abandoned past its deadline must not hold us
