"""The container agents: DockerContainer and DockerDaemon, on Docker and on Podman through
the Docker SDK (docs/containers.md). One folder, two agents: importing this package
registers both and imports no driver."""

from kvmguest.agents.docker.agent import CONTAINER_AGENT as CONTAINER_AGENT
from kvmguest.agents.docker.agent import DAEMON_AGENT as DAEMON_AGENT
from kvmguest.agents.registry import register

register(CONTAINER_AGENT)
register(DAEMON_AGENT)
