"""Where the tests find the repository (helpers, no tests): one place for the paths that
test files in tests/<area>/ would otherwise compute from their own ``__file__``."""

import os

#: the tests/ folder (helper modules, user_code/)
TESTS = os.path.dirname(os.path.abspath(__file__))
#: the repository root (configs/, tools/, benchmarks/, docs/, ...)
ROOT = os.path.dirname(TESTS)
