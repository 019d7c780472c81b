"""A new resource type is one agent and nothing above it: a minimal agent, defined here and
registered in the registry, runs through validate, the daemon's engine, the OCF entry
points and the export without a line changed above ``agents/``.

The dummy type manages a file: online creates it, offline removes it, monitor tells whether
it is there.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from kvmguest.agents import registry
from kvmguest.agents.base import Env, EventSink, Outcome, Progress
from kvmguest.agents.loader import Loaded, builtin_types, validate
from kvmguest.agents.ocf_interface import Ocf, OcfEnv, OcfSide, param, read_environ
from kvmguest.daemon.engine import Engine
from kvmguest.daemon.store import Store
from kvmguest.framework.decision import State
from kvmguest.model import states
from kvmguest.model.attributes import AttrDef, Typed
from kvmguest.model.config import Block, Config, Diagnostic
from kvmguest.model.parser import parse_text
from kvmguest.model.resolver import Loaded as AnyLoaded
from kvmguest.model.states import MonitorResult
from kvmguest.ocf.export import export, render_crm
from kvmguest.ocf.main import main as ocf_main
from kvmguest.ocf.metadata import render

TYPE_TEXT = """\
type Dummy (
    static str ArgList[] = { Path }
    str Path
    int DelayAfterOnline = 1
)
"""


class DummyHandle:
    process_name = "dummy process"

    def __init__(self, resource: str, values: dict[str, Typed]) -> None:
        self.resource = resource
        self.path = Path(str(values["Path"]))
        self.key = str(self.path)
        self.statics: Mapping[str, Typed] = values

    def timeout(self, entry_point: str) -> int:
        value = self.statics[f"{entry_point}Timeout"]
        assert isinstance(value, int)
        return value

    def monitor(self) -> MonitorResult:
        if self.path.exists():
            return states.online(100, "file present")
        return states.offline("no file")

    def online(self) -> Outcome:
        self.path.write_text("up\n")
        return Outcome(True, f"{self.path} created")

    def offline(self) -> Outcome:
        self.path.unlink(missing_ok=True)
        return Outcome(True, f"{self.path} removed")

    def clean(self, reason: int) -> Outcome:
        return self.offline()

    def migrate(self, target: str) -> Outcome:
        return Outcome(False, "a file does not migrate")

    def action(self, token: str, args: list[str]) -> Outcome:
        return Outcome(True, token, output=" ".join(args))

    def set_progress(self, progress: Progress) -> None:
        pass

    def wake(self) -> None:
        pass

    def main_process(self) -> int | None:
        return None

    def process_exited(self, pid: int, result: MonitorResult) -> MonitorResult:
        return states.offline(f"{pid} exited")

    def close(self) -> None:
        pass


class DummyRuntime:
    def __init__(self, env: Env) -> None:
        self.env = env

    def bind(
        self, loaded: AnyLoaded, resource: str, *, progress: Progress | None = None
    ) -> DummyHandle:
        return DummyHandle(resource, loaded.resource_values(resource, self.env.system))

    def events(self, sink: EventSink, loop: asyncio.AbstractEventLoop, pool: Executor) -> None:
        return None

    def close(self) -> None:
        pass


class DummyEnv(OcfEnv):
    __slots__ = ()
    table = {"path": param("path", "string", "", "the file", "The file that is the resource.",
                           attr="Path")}  # fmt: skip


class DummyOcf(OcfSide):
    params = tuple(DummyEnv.table.values())
    shortdesc = "a file"
    longdesc = "A file that is there while the resource runs."

    def from_environ(self, environ: Mapping[str, str]) -> OcfEnv:
        return read_environ(environ, DummyEnv, "Dummy")

    def run(self, action: str, env: OcfEnv) -> tuple[Ocf, str]:
        path = Path(env.get("path"))
        if action == "start":
            path.write_text("up\n")
        elif action == "stop":
            path.unlink(missing_ok=True)
        elif action in ("monitor", "status"):
            return (Ocf.SUCCESS, "there") if path.exists() else (Ocf.NOT_RUNNING, "gone")
        return Ocf.SUCCESS, action


class DummyAgent(registry.Agent):
    type_name = "Dummy"

    def type_text(self) -> str:
        return TYPE_TEXT

    def check(self, cfg: Config, block: Block, attrs: dict[str, AttrDef]) -> list[Diagnostic]:
        path = block.attrs.get("Path")
        if not isinstance(path, str) or not path.startswith("/"):
            return [
                Diagnostic(block.position("Path"), f"Dummy {block.name}: Path must be absolute")
            ]
        return []

    def runtime(self, env: Env, *, shared: bool = False) -> DummyRuntime:
        return DummyRuntime(env)

    def ocf(self) -> OcfSide:
        return DummyOcf()


@pytest.fixture
def dummy() -> Iterator[DummyAgent]:
    agent = registry.register(DummyAgent())
    try:
        yield agent
    finally:
        registry.unregister(agent.type_name)


def _config(tmp_path: Path, path: str) -> Path:
    cfg = tmp_path / "main.cf"
    cfg.write_text(
        "cluster c ( )\n"
        "system host1 ( )\n"
        "group g ( SystemList = { host1 = 0 } )\n"
        f'    Dummy flag ( Path = "{path}" )\n'
    )
    return cfg


def test_the_type_comes_from_the_registry(dummy: DummyAgent) -> None:
    assert "Dummy" in builtin_types() and "KVMGuest" in builtin_types()
    registry.unregister("Dummy")
    assert "Dummy" not in builtin_types()
    registry.register(dummy)
    assert builtin_types()["Dummy"].attrs["DelayAfterOnline"].default == "1"


def test_validate_runs_the_agents_hook_with_positions(dummy: DummyAgent, tmp_path: Path) -> None:
    good = _config(tmp_path, str(tmp_path / "flag"))
    cfg, diags = parse_text(good.read_text(), "main.cf")[:2]
    assert diags == [] and validate(cfg) == []
    cfg, _ = parse_text(good.read_text().replace(str(tmp_path / "flag"), "relative"), "main.cf")[:2]
    assert [str(d) for d in validate(cfg)] == ["main.cf:4:18: Dummy flag: Path must be absolute"]
    cfg, _ = parse_text(good.read_text().replace("Path =", "Pth ="), "main.cf")[:2]
    messages = [d.message for d in validate(cfg)]
    assert any("unknown attribute 'Pth' (did you mean Path?)" in m for m in messages), messages


def test_the_daemons_engine_runs_it(dummy: DummyAgent, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    loaded = Loaded.from_file(str(_config(tmp_path, str(flag))))
    store = Store(tmp_path / "state.db")

    async def run() -> None:
        engine = Engine(loaded, Env(str(tmp_path / "main.cf"), "host1"), store)
        await engine.start()
        runner = asyncio.ensure_future(engine.run())
        r = engine.resource("flag")
        try:
            assert await engine.wait_for(r, lambda s: s is State.OFFLINE, 30) is State.OFFLINE
            engine.request(r, "online")
            assert await engine.wait_for(r, lambda s: s is State.ONLINE, 30) is State.ONLINE
            assert flag.exists()
            out = await engine.run_action(r, "echo", ["a", "b"])
            assert out.ok and out.output == "a b"
            engine.request(r, "offline")
            assert await engine.wait_for(r, lambda s: s is State.OFFLINE, 30) is State.OFFLINE
            assert not flag.exists()
        finally:
            await engine.stop(grace=5)
            runner.cancel()

    try:
        asyncio.run(run())
    finally:
        store.close()


def _ocf(action: str, environ: dict[str, str], type_name: str | None = "Dummy") -> int:
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        return ocf_main([action], environ, type_name=type_name)


def test_the_ocf_entry_points_run_it(dummy: DummyAgent, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    env = {"OCF_RESKEY_path": str(flag)}
    assert _ocf("monitor", env) == Ocf.NOT_RUNNING
    assert _ocf("start", env) == Ocf.SUCCESS and flag.exists()
    # Pacemaker names the type in OCF_RESOURCE_TYPE: the wrapper need not.
    assert _ocf("monitor", {**env, "OCF_RESOURCE_TYPE": "Dummy"}, None) == Ocf.SUCCESS
    assert _ocf("stop", env) == Ocf.SUCCESS and not flag.exists()
    assert _ocf("monitor", {"OCF_RESKEY_pth": "x"}) == Ocf.ERR_CONFIGURED  # unknown parameter
    xml = render(type_name="Dummy")
    assert '<resource-agent name="Dummy"' in xml and '<parameter name="path"' in xml
    assert "migrate_to" not in xml  # the dummy does not migrate


def test_the_export_exports_it(dummy: DummyAgent, tmp_path: Path) -> None:
    cfg, _ = parse_text(_config(tmp_path, "/srv/flag").read_text(), "main.cf")[:2]
    text = render_crm(export(cfg))
    assert "primitive flag ocf:kvmguest:Dummy" in text and "path=/srv/flag" in text
