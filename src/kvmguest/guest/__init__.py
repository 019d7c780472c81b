"""Guest side of kvmguest: the DR payload format and ``kvmguest-net-reconfig``.

This package runs alone inside a virtual machine (installed with ``pip install kvmguest[guest]``
or as the single-file bundle built by ``scripts/build-guest-bundle.sh``). It therefore imports
nothing from the rest of ``kvmguest``, only the standard library, and optionally ``pycdlib``
and ``pyroute2``. Keep this module free of imports: the agent imports
``kvmguest.guest.payload`` and must not pay for the network code.
"""
