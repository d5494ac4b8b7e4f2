"""The main job on the built-in simulated patient (README's first command)."""
