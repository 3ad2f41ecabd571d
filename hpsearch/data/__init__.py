"""The data: loading, checks and the chapter's split (:mod:`.loading`); the builtin sets (:mod:`.builtin`)."""
