"""Kubernetes resource quantities in the canonical form the API server stores and echoes.

The controller decides that nothing needs applying when every rendered field already has the same value
on the live object, so a request rendered as "0.5" would never match the "500m" the server keeps.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[eE][+-]?[0-9]+)|[a-zA-Z]*)$")
_NANO = Fraction(1, 10**9)


def canonical_quantity(text: str) -> str:
    """Return `text` as the API server would print it back, e.g. "0.5" -> "500m", "1024Mi" -> "1Gi".

    Raises ValueError for text that is not a Kubernetes quantity. Like the server, values finer than
    one nano are rounded up.
    """
    value, binary, exponent_format = _parse(text)
    if value == 0:
        return "0"
    # Binary form only for whole values of at least 1Ki; the server shows smaller ones as decimals.
    if binary and abs(value) >= 1024 and value.denominator == 1:
        return _binary(int(value))
    return _decimal(value, exponent_format)


def quantity_value(text: str) -> Fraction:
    """The exact value of a quantity (in cores or bytes), for comparing two quantities."""
    return _parse(text)[0]


def _parse(text: str) -> tuple[Fraction, bool, bool]:
    """Value, whether the suffix was binary, whether the number had an exponent."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 100m, 0.5, 64Mi, 1Gi)")
    number, suffix = match.groups()
    value = Fraction(number)
    if suffix in _BINARY:
        return _round_up_to_nano(value * 1024 ** _BINARY[suffix]), True, False
    if suffix in _DECIMAL:
        return _round_up_to_nano(value * Fraction(10) ** _DECIMAL[suffix]), False, False
    if suffix[:1] in ("e", "E"):
        return _round_up_to_nano(value * Fraction(10) ** int(suffix[1:])), False, True
    raise ValueError(f"{text!r} has an unknown quantity suffix {suffix!r}")


def _round_up_to_nano(value: Fraction) -> Fraction:
    nanos = value / _NANO
    if nanos.denominator == 1:
        return value
    ceiling = -(-nanos.numerator // nanos.denominator)
    return ceiling * _NANO


def _binary(value: int) -> str:
    exponent = 0
    while value % 1024 == 0 and exponent < max(_BINARY.values()):
        value //= 1024
        exponent += 1
    suffix = next((name for name, power in _BINARY.items() if power == exponent), "")
    return f"{value}{suffix}"


def _decimal(value: Fraction, exponent_format: bool) -> str:
    # Smallest exponent that makes the mantissa whole: values are multiples of 1e-9 here.
    exponent = -9
    mantissa = value * 10**9
    while mantissa.numerator % 10 == 0 and mantissa != 0:
        mantissa /= 10
        exponent += 1
    # The server shows exponents that are multiples of three.
    shift = exponent % 3
    mantissa *= 10**shift
    exponent -= shift
    digits = str(int(mantissa))
    if exponent_format:
        return digits if exponent == 0 else f"{digits}e{exponent}"
    if exponent in _DECIMAL_SUFFIX:
        return f"{digits}{_DECIMAL_SUFFIX[exponent]}"
    return f"{digits}e{exponent}"
