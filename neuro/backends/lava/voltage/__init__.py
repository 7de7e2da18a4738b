"""A LIFReset that streams its voltage through an OutPort.

It lives in its own package because Lava's compiler imports every module in the
folder of a process (and of its parent package) while it looks for process models.
"""
