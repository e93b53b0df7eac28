"""The feature-flag service on the log: pure model, change records, store, evaluator; servers as glue."""
