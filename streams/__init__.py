"""The streaming layer: the Faust app, its agents, the InfluxDB sink and the embedded runtime."""
