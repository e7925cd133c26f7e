"""`python3 agent.pyz JOB_DIR` (the zipapp's entry) or `python -m dstack.agent JOB_DIR`."""

import sys

from dstack.agent.main import main

sys.exit(main(sys.argv))
