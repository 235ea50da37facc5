"""Everything in Strata that touches Kafka: the Faust app, topics, tables, agents, views and the CLI."""
