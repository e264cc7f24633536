"""The applications: what users run, built on the three floors below.

``mbrl_core`` (the framework), ``dynamics`` (the ensemble service) and ``policies`` (the learners)
never import this package; it is the only one that imports all three, with plain static imports.
"""
