"""Offline evaluation (docs/design.md §6): the prequential loop (`prequential`), the recommenders it compares
(`recommenders`: Strata's forms, ALS, River; `baselines`: the textbook ones; `registry`: every one
by name) and the ranking metrics (`metrics`)."""
