"""Recording demonstrations: the recorder logic, record profiles, and the `echo-guidance record` command.

* :mod:`echo_guidance.recording.recorder`: one bag per demonstration, synchronisation, disk guard.
* :mod:`echo_guidance.recording.profiles`: which processes and nodes a set-up runs (config/profiles).
* :mod:`echo_guidance.recording.launcher`: starts a profile's nodes as separate processes.
* :mod:`echo_guidance.recording.monitor`: the live status line.
"""
