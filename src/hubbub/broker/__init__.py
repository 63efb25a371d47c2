"""The engine: fan-out (Broker), who-is-where (Presence) and cluster-wide commands."""
