"""minicloud: a single-host serverless cloud over MQTT, with real worker processes."""

__version__ = "0.1.0"
