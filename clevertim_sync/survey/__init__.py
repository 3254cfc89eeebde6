"""The survey of a live account, read-only: `probe.py` names every variant of the reference it meets;
`capture.py` writes an anonymised copy that the emulator can serve back.
"""
