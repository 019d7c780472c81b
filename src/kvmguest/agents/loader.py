"""The configuration as the registered agents read it: the built-in types (each agent's
type text), ``validate`` with every agent's hook, and :class:`Loaded` bound to them.

This is the one place where the registry meets the configuration model: ``validate``, the
daemon, the OCF adapter, the export and the CLI load configurations through here.
"""

from __future__ import annotations

from kvmguest.agents import registry
from kvmguest.model import config_cache, controls, resolver
from kvmguest.model.config import Config, ConfigInvalid, Diagnostic, TypeDef, errors_of
from kvmguest.model.types import parse_types
from kvmguest.model.validate import TypeRules
from kvmguest.model.validate import validate as validate_model

_built: tuple[int, dict[str, TypeDef]] | None = None


def builtin_types() -> dict[str, TypeDef]:
    """Every registered agent's type, as its type text defines it."""
    global _built
    generation = registry.generation()
    if _built is None or _built[0] != generation:
        out: dict[str, TypeDef] = {}
        for agent in registry.agents():
            types = parse_types(agent.type_text(), f"<built-in {agent.type_name}>")
            out[agent.type_name] = types[agent.type_name]
        _built = (generation, out)
    return _built[1]


def validate(cfg: Config) -> list[Diagnostic]:
    """Every problem of ``cfg``, each with its position: the model's checks and each
    resource's agent's own (its validate hook)."""
    rules = {
        a.type_name: TypeRules(hook=a.check, ranges=a.ranges(), identity=a.identity)
        for a in registry.agents()
    }
    # A file's control characters stop its parse; values laid over it (the OCF agent's
    # parameters) or built without a file are checked here, before anything else.
    return controls.in_values(cfg) + validate_model(cfg, builtin_types(), rules)


class Loaded(resolver.Loaded):
    """A configuration with the registered agents' built-in types in force."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg, builtin_types())

    @classmethod
    def from_file(cls, path: str) -> Loaded:
        """Parse and validate; raises ConfigInvalid (with positions) on any error. A
        configuration that is valid is kept for :meth:`cached`."""
        from kvmguest.model.parser import load  # lark: not on the cached one-shot path

        cfg, diags = load(path)
        diags = diags or validate(cfg)
        if errors_of(diags):
            raise ConfigInvalid(diags)
        # Warnings (a stock VCS attribute) are `validate`'s to print, which never reads the
        # cache: a VCS main.cf gets the cached one-shot path like any other.
        config_cache.store(cfg, registry.code_stamp())
        return cls(cfg)

    @classmethod
    def cached(cls, path: str) -> Loaded | None:
        """The configuration of ``path`` as :meth:`from_file` last validated it, while no
        file it was read from changed; None otherwise (then call from_file)."""
        cfg = config_cache.lookup(path, registry.code_stamp())
        return cls(cfg) if cfg is not None else None
