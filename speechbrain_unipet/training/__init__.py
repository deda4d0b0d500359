"""Training: hparams and their checks, data pipelines, the validator,
the back-end factory, warm start, checkpoints, losses, schedules and
opening what training made.
"""
