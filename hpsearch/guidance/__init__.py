"""The chapter's guidance: the LR range test (:mod:`.lr_finder`), advice on a study file (:mod:`.advice`),
which hyperparameters mattered (:mod:`.importance`) and the study report (:mod:`.report`)."""
