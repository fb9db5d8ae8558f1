"""The local stack: every medsearch service as a child process on loopback (``medsearch up``)."""
