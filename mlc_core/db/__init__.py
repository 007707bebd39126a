"""The database of mlc: one module per concept, each taking a session and never committing.

- ``models``: the tables (typed ORM); ``engine``: engines for SQLite and PostgreSQL;
  ``migrate``: the Alembic migrations, driven from code.
- ``images``: image versions (register, look up, failures); ``labels``: people's labels;
  ``scores``: probabilities and tags (write, read, retag, search); ``claims``: which images
  a scoring run works on and who holds them; ``runs``: job runs, their heartbeats and
  liveness; ``locks``: locks of jobs that must not overlap; ``model_versions``: trained
  models, the champion, promotion and thresholds.

SQLite (the embedded default) and PostgreSQL are both supported by one migration history.
The views people query are defined in ``views``: for each current image (not superseded, not
retired) they show the tags and probabilities of one model version, the champion where it
scored the image, else the most recent champion that did:

``current_tags(image_uri, tag, probability, model_version)``
    The tags of each image: the classes whose probability reached the class threshold.
``current_scores(image_uri, class_name, probability, model_version)``
    Every class's probability for each image: the long form of ``scores.probabilities``, whose
    position ``i`` belongs to ``model_versions.classes[i]``.
``scoring_failures(image_uri, error, failed_at)``
    Images whose latest scoring failed, with the reason (they show no model tags).
``shown_scores(image_id, model_version_id, probabilities, scored_at)``
    The score row each current image shows, for queries of one's own.

For example: ``SELECT image_uri FROM current_tags WHERE tag = 'beach' ORDER BY image_uri``.
"""
