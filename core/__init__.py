"""The core layer: settings, logging, retries and the Kafka client, used by every layer above.

It depends on ``schemas`` and third-party libraries only (see docs/architecture.md)."""
