"""A/B experiments on flags (issue 17): definitions in ``__flags`` (model,
registry), attribution of exposures and tracking events (pure), the analyzer
that reads ``__exposures``/``__tracking`` (glue), their admin RPCs and CLI."""
