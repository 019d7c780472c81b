"""One folder per resource type (each an agent: its type text and its entry points), found
through :mod:`kvmguest.agents.registry`. Nothing above this package names a type."""
