"""Kafka: clients and the one consume loop, topics, and the generator that publishes the world.
May import sim, contract and the base modules.
"""
