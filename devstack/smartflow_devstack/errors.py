"""Errors of the local stack."""


class StackError(Exception):
    """A server of the local stack could not be installed, started or reached."""
