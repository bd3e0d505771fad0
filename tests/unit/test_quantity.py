"""Quantities are rendered exactly as the API server echoes them back."""

from __future__ import annotations

from fractions import Fraction

import pytest

from computedomain.quantity import canonical_quantity, quantity_value


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("10m", "10m"),
        ("64Mi", "64Mi"),
        ("0.5", "500m"),
        ("1000m", "1"),
        ("2000", "2k"),
        ("1500", "1500"),
        ("1000000", "1M"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("0.25Gi", "256Mi"),
        ("1.5Ki", "1536"),  # whole but not a multiple of 1Ki: plain bytes
        ("0.5Ki", "512"),  # below 1Ki: decimal form
        ("1e3", "1e3"),  # exponent notation stays exponent notation
        ("100e-3", "100e-3"),
        ("12e20", "1200e18"),
        ("0", "0"),
        ("0Mi", "0"),
        ("0.1n", "1n"),  # finer than a nano rounds up
        (" 128Mi ", "128Mi"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    assert canonical_quantity(text) == canonical


@pytest.mark.parametrize("text", ["", "Mi", "1.2.3", "10 m", "1Xi", "ten"])
def test_rejects_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        canonical_quantity(text)


def test_value() -> None:
    assert quantity_value("1Gi") == 1024**3
    assert quantity_value("250m") == Fraction(1, 4)
