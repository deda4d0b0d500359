"""Evaluation: the utterance lists, the extraction engine, test
conditions (noise, reverberation, truncation, telephone), reports and
plots.

The names below were the module ``speechbrain_unipet.evaluation`` before
the package was layered; they stay importable from here because user
scripts name them.
"""

from speechbrain_unipet.evaluation.reports import (  # noqa: F401
    CONDITION_COLUMNS,
    QUALITY_MEASURES,
    EvaluationError,
    apply_calibration,
    calibration_scoring,
    check_scoring,
    fit_calibration,
    labels_of,
    learned_layer_weights,
    markdown_table,
    read_scores,
    save_evaluation_plots,
    score_store,
    scoring_settings,
    trial_features,
    verification_results,
    with_test_side,
    write_condition_report,
    write_scores,
)
