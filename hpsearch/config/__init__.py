"""The study file: its schema (:mod:`.schema`), safe loading with ``--set`` overrides (:mod:`.loading`) and
the chapter's presets (:mod:`.presets`). The bottom layer with :mod:`hpsearch.errors`: it imports no engine."""
