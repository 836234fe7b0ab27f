"""Does a live object still hold what we would apply? Pure.

The apiserver adds defaults (``protocol: TCP``, ``dnsPolicy``...) and rewrites quantities into a
canonical form (``0.5`` -> ``500m``), so "equal" means: every field we set is present in the live
object with the same value, quantities compared by amount, empty values equal to absent ones.
A field someone else changed (``kubectl edit`` of the image) is drift and gets re-applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)([KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal | None:
    """The amount of a Kubernetes quantity (`100m`, `1Gi`, 2), or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]
    except InvalidOperation:
        return None


def _empty(value: object) -> bool:
    return value is None or value == {} or value == []


def contains(live: object, desired: object) -> bool:
    """True when ``live`` holds everything ``desired`` says."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return _empty(desired) and _empty(live)
        for key, value in desired.items():
            if key not in live:
                if _empty(value):
                    continue
                return False
            if not contains(live[key], value):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(live, list):
            return _empty(desired) and _empty(live)
        return len(live) == len(desired) and all(contains(a, b) for a, b in zip(live, desired, strict=True))
    if live == desired:
        return True
    if isinstance(live, str | int) and isinstance(desired, str | int) and str(live) != str(desired):
        live_amount, desired_amount = parse_quantity(live), parse_quantity(desired)
        return live_amount is not None and live_amount == desired_amount
    return False
