"""The simulated marketplace: the city and its demand, drivers, dispatch, the world's clock.
May import contract and the base modules; knows nothing of Kafka, S3 or Redis.
"""
