import sys

import tasks  # noqa: F401  (offline environment before any library import)
from tasks.trainer.recipe import main

sys.exit(main())
