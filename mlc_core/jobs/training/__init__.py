"""Training a model version: ``data`` (the labelled images, decoded once), ``champion`` (the
candidate judged against the champion on its test images), ``train`` (the whole run, which
registers the version and decides its promotion) and ``report`` (what it reports, importable
without TensorFlow)."""
