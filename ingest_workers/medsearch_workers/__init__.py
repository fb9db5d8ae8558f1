"""Kafka ingest workers: DICOM objects and radiology reports."""
