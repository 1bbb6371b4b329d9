"""Simulation side: SUMO scenarios (import, bundled, runs with detectors and signal control),
virtual cameras with ground truth, record/replay, and the field-device emulator."""
