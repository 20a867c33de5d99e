"""Conversions between Python values and the wire: audio, images, durations, labels, speech configs."""
