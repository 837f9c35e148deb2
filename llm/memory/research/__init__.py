"""The research around the chat's memory: the labelled sets, training, evaluation, the benchmark, the old baseline.

The chat never imports this package; its entry points are llm/memory/{train,evaluate,benchmark}_retrieval.py.
"""
