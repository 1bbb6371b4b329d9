"""Simpang: real-time smart-traffic stream processing.

The top-level ``simpang`` package holds the pure domain layer (vehicle classes, the site
model, records, windowing and the InfluxDB measurement schema) and, on top of everything,
the ``simpang`` command line. Nothing in the domain modules performs I/O.
"""

__version__ = "0.1.0"
