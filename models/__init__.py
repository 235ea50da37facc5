"""Strata's maths: interest profiles, catalog, events, loaders — plain Python and numpy.

Nothing in this package knows about Kafka or Faust: the stream agents and the
offline evaluator call the very same functions.
"""
