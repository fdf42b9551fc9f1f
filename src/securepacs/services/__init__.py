"""Use cases: ingest, query, retrieve, recovery. Edges (dimse, cli) call these."""
