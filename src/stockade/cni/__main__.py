"""`python -m stockade.cni`: the plugin process (the `stockade-cni` console script runs the same)."""

import sys

from stockade.cni.plugin import main

sys.exit(main())
