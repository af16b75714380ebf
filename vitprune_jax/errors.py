"""Errors shared by all modules."""


class UserError(Exception):
  """Bad input from the user; main prints the message as one line and exits 2."""
