"""Typed reports rendered for people, in one place: each report becomes a
:class:`~mlc_core.reports.document.Document`, printed as text by the CLI and published as
markdown (or a table) by the flows, so the two never say different things.

- ``document``: headings, paragraphs, tables and their text and markdown renderings.
- ``training``: a training run and the retrain artifact.
- ``scoring``: scoring, re-tagging, labels imports and the nightly artifact.
- ``catalog``: model versions, thresholds, tagged images and the demo's hold-out.
"""
