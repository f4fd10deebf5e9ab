"""``python -m pancreas_ssl_seg ARGS``: the ``pancreas-ssl-seg`` command line."""

import sys

from .cli import main

sys.exit(main())
