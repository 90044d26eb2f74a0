"""The event contract: JSON schemas and the validator (events), the same in Arrow (columnar).
May import only the base modules at the top (config, geo, runs, process).
"""
