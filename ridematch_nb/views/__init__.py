"""What notebooks show: charts, summaries, the live view's state, processes and widgets.
May import model and every stage below it.
"""
