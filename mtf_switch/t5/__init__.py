"""T5 integration: the pinned stack made to work (compat), quiet logs, T5's
binary with the non-finite guard, and `t5.models.MtfModel` for Switch models.
"""
