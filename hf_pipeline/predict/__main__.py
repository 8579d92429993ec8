"""``python -m hf_pipeline.predict``: see :mod:`hf_pipeline.predict.run`."""

import sys

from hf_pipeline.predict.run import main

sys.exit(main())
