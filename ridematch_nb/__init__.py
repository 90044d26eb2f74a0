"""RideMatch notebooks: the package every stage notebook imports.

Simulator -> Kafka -> ETL -> S3 parquet -> Feast (Redis online) -> training -> matching.
"""

__version__ = "0.1.0"
