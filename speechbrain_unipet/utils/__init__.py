"""Helpers every stage uses: audio loading, file helpers, the user-error
base class and precision.
"""
