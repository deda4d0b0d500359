"""Former module ``speechbrain_unipet.precision``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.utils.precision``.
"""

from speechbrain_unipet.utils.precision import (  # noqa: F401
    grouped_conv_outside_cpu_autocast,
)
