"""raysweep.control: what steers beta and the learning rate during training.

- ``geco``: the GECO rate controller (beta driven to a target rate);
- ``schedules``: the KL warm-up (sine ramp) and the cosine learning-rate schedule.
"""
