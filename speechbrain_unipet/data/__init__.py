"""Data: the layouts of users' recordings, trial lists and the
preparation of the recipe's CSVs.
"""
