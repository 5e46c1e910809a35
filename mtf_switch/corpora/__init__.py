"""The offline corpora and their shipped SentencePiece vocabularies: the
default corpus (docstrings) and the code corpus (the pinned stack's source).
"""
