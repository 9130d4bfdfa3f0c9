"""winback: find lapsed customers, win them back with personal offers, and prove it against a holdout."""

__version__ = "0.1.0"
