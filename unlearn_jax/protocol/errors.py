"""The protocol's own error: a ``ValueError`` so that the command line prints it as one line."""


class ProtocolError(ValueError):
  """A user-facing failure of the protocol (diverged method, too few seeds, missing chunks, ...)."""
