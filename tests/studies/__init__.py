# A regular package, unlike the other test folders: tests/ is on sys.path,
# and gin first looks for `include 'studies/decay.gin'` in a Python package
# named `studies`; a namespace package there (no __init__.py) has no file
# and makes gin fail, a regular one has no such gin file and gin goes on to
# its search path.
