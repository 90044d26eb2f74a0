"""The model: training set and training, online matching, and the dispatch replay.
May import features and every stage below it.
"""
