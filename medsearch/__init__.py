"""medsearch: search for medical images and radiology reports."""

__version__ = "0.1.0"
