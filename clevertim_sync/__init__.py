"""clevertim-sync: a local relational mirror of a Clevertim CRM account."""

__version__ = "0.1.0"
