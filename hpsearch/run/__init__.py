"""Running a study: the plan (:mod:`.plan`: everything checked, nothing written), the search engine both doors
share (:mod:`.search`), the CLI's door (:mod:`.study`), scikit-learn's door (:mod:`.search_cv`) and the
processes of a study (:mod:`.workers`)."""
