"""``python -m kvmguest.ocf ACTION``: the OCF resource agent (see :mod:`kvmguest.ocf.main`)."""

from kvmguest.ocf.main import run

run()
