"""The learners: shared networks and the SAC core, then one short module per algorithm.

Look learners up by name with :func:`policies.registry.get_learner`.
"""
