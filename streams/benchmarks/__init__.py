"""`strata bench`: the benchmarks of docs/design.md §7 (`run` dispatches them). Workers never import this
package: `stream` (the hot path against a broker), `ranking` (ranking in-process), `common` (the
benchmark worker, metrics scraping and CPU accounting, and the serving, ingest, training, recovery
and profile-size benchmarks)."""
