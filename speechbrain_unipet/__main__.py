"""``python -m speechbrain_unipet``: the ``speechbrain-unipet`` command line
(see ``speechbrain_unipet.cli``).

Authors
 * speechbrain-unipet contributors 2026
"""

import sys

from speechbrain_unipet.cli import main

if __name__ == "__main__":
    sys.exit(main())
