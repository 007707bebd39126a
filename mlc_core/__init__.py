"""mlc: batch multilabel image tagging.

The library behind the ``mlc`` command and the Prefect flows. It never imports Prefect.
"""

__version__ = "0.1.0"
