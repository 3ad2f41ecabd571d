"""Evaluating candidates: the evaluator (:mod:`.evaluator`, the tuner half of KerasTuner's oracle/tuner split),
CV folds (:mod:`.folds`), one fit (:mod:`.fitting`), where fits run (:mod:`.execution`, :mod:`.cpus`) and the
search budget (:mod:`.budget`)."""
