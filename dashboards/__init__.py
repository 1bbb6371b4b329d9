"""Dashboards as code and the InfluxQL side of the measurement schema."""
