"""The feature-flag service on the log: pure model, change records, store, evaluator; servers as glue.

Modules by job:

- ``model``: flag definitions in the flagd flags.json format and their validation.
- ``changes``: the versioned change-record format written to the log.
- ``store``: the materialised view of every tenant's flag sets, rebuilt from the log.
- ``evaluator``: ``FlagdEvaluator``, a flag set compiled once per change and evaluated
  with flagd's semantics (the ``openfeature-flagd-api`` ``Evaluator`` protocol).
- ``jsonlogic``: JsonLogic compiled to closures; ``coercion``: its value semantics.
- ``flagd_ops``: flagd's custom operations (``fractional`` v1/v2/v3, ``sem_ver``,
  ``starts_with``, ``ends_with``).
"""
