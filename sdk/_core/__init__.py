"""What the SDK shares with the engine's processes.

The engine (scheduler, worker, store, api, broker, cli) imports from `tideflow` its public
names, `tideflow.errors`, and this package; nothing else private. Here live the pieces both
sides must agree on: ids, durations, expressions, cron parsing, retry backoff, and the typed
protocol between a worker and the scheduler.
"""
