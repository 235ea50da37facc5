"""Behaviour logs as events: the public logs' loaders (`loaders`) and the seeded synthetic shop
(`synthetic`)."""
