"""``python -m kvmguest.guest`` and the single-file bundle run kvmguest-net-reconfig."""

import sys

from kvmguest.guest.netreconfig import main

sys.exit(main())
