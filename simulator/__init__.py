"""Simulation side: emulated field devices now; SUMO scenarios, virtual cameras and closed-loop
evaluation as they land."""
