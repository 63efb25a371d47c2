"""The engine: fan-out by interest (Broker), who-is-where (Presence), cluster-wide commands and
queries; in memory (one node) or on Redis (a cluster)."""
