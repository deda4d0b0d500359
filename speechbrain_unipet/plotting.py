"""Former module ``speechbrain_unipet.plotting``, kept as an import path:
saved ``hyperparams.yaml`` files, exported folders and user scripts
name it. New code imports from ``speechbrain_unipet.evaluation.plotting``.
"""

from speechbrain_unipet.evaluation.plotting import (  # noqa: F401
    plot_conditions,
    plot_det,
    plot_gates,
    plot_layer_weights,
    plot_score_histogram,
)
