"""RideMatch notebooks: the package every stage notebook imports.

Simulator -> Kafka -> ETL -> S3 parquet -> Feast (Redis online) -> training -> matching.
"""

import warnings
from importlib.metadata import version

__version__ = version("ridematch-nb")  # written once, in pyproject.toml


def quiet_third_party_warnings() -> None:
    """Hide notices from inside pinned third-party libraries that say nothing about this
    project's data or code (they would clutter every executed notebook). Importing the
    package changes no filter: the notebooks and the CLI call this at their start, and
    ``features.store`` again after importing Feast, which puts its own in front."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"kafka(\..*)?$")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"dask(\..*)?$")
    # kafka-python reads its protocol schemas with importlib.resources' legacy calls
    warnings.filterwarnings(
        "ignore", message=r"(open|read)_text is deprecated", category=DeprecationWarning
    )
