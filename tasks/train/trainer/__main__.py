import sys

import tasks  # noqa: F401  (offline environment before any library import)
from tasks.train.trainer.recipe import main

sys.exit(main())
